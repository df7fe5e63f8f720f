package replica

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/tandemhci/tandem/services/bufpool"
)

// The replication stream: the primary's node opens it to the secondary's
// node through the front door (HTTP Upgrade "tandem-replication/1") and both
// sides then exchange frames. A frame is a 32-byte header and a payload:
//
//	magic "TREP" | type u16 | flags u16 | id u64 | offset u64 | length u32 | payload u32
//
// big-endian. id pairs a reply with its request; offset and length address
// the volume in bytes. The payload of WRITE and RESYNC_DATA is the data
// followed by one CRC32C per block, so the checksum travels end to end.

// ProtocolVersion is the replication protocol this build speaks. A peer
// offering another version is refused with a message naming both.
const ProtocolVersion = 1

// UpgradeProtocol is the HTTP Upgrade token of the replication stream.
const UpgradeProtocol = "tandem-replication/1"

const (
	frameMagic      = "TREP"
	frameHeaderSize = 32
	// MaxPayload bounds a frame's payload: the largest write the NBD server
	// takes (32 MiB) with its checksums, or a bitmap, with room to spare.
	MaxPayload = 48 << 20
)

// FrameType says what a frame is.
type FrameType uint16

const (
	FrameHello       FrameType = iota + 1 // primary → secondary: JSON Hello
	FrameWelcome                          // secondary → primary: JSON Welcome
	FrameRefuse                           // either way: JSON Refusal, then close
	FrameWrite                            // data ‖ crcs; FlagFUA
	FrameAck                              // reply to anything that has no data to return
	FrameError                            // reply: payload is the error's text
	FrameFlush                            // make every acknowledged write durable
	FrameTrim                             // offset, length
	FrameZero                             // offset, length; FlagFUA
	FrameResyncData                       // data ‖ crcs of a resync; the target marks it in sync
	FrameRead                             // offset, length → FrameReadReply
	FrameReadReply                        // data ‖ crcs (the crcs are those the data really has)
	FrameVerify                           // offset, length → FrameVerifyReply
	FrameVerifyReply                      // per block: crc of the data (4 bytes) ‖ stored crc matched (1 byte)
	FrameResyncDone                       // JSON ResyncDone: the target takes the source's generation
	FramePing
	FramePong
	frameTypeEnd
)

var frameTypeNames = [...]string{
	FrameHello: "HELLO", FrameWelcome: "WELCOME", FrameRefuse: "REFUSE", FrameWrite: "WRITE",
	FrameAck: "ACK", FrameError: "ERROR", FrameFlush: "FLUSH", FrameTrim: "TRIM", FrameZero: "ZERO",
	FrameResyncData: "RESYNC_DATA", FrameRead: "READ", FrameReadReply: "READ_REPLY",
	FrameVerify: "VERIFY", FrameVerifyReply: "VERIFY_REPLY", FrameResyncDone: "RESYNC_DONE",
	FramePing: "PING", FramePong: "PONG",
}

func (t FrameType) String() string {
	if t > 0 && t < frameTypeEnd {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("FrameType(%d)", uint16(t))
}

// FlagFUA on WRITE or ZERO: durable before the ACK.
const FlagFUA uint16 = 1

// Frame is one decoded frame.
type Frame struct {
	Type    FrameType
	Flags   uint16
	ID      uint64
	Offset  uint64
	Length  uint32
	Payload []byte
}

// ErrBadFrame wraps every decoding error: the stream is closed after one.
var ErrBadFrame = errors.New("bad replication frame")

// parseHeader decodes a frame header and checks what can be checked
// without the payload.
func parseHeader(h []byte) (Frame, uint32, error) {
	if len(h) < frameHeaderSize {
		return Frame{}, 0, fmt.Errorf("%w: short header (%d bytes)", ErrBadFrame, len(h))
	}
	if string(h[:4]) != frameMagic {
		return Frame{}, 0, fmt.Errorf("%w: magic %q, not %q (a foreign protocol?)", ErrBadFrame, h[:4], frameMagic)
	}
	f := Frame{
		Type:   FrameType(binary.BigEndian.Uint16(h[4:])),
		Flags:  binary.BigEndian.Uint16(h[6:]),
		ID:     binary.BigEndian.Uint64(h[8:]),
		Offset: binary.BigEndian.Uint64(h[16:]),
		Length: binary.BigEndian.Uint32(h[24:]),
	}
	n := binary.BigEndian.Uint32(h[28:])
	if f.Type == 0 || f.Type >= frameTypeEnd {
		return Frame{}, 0, fmt.Errorf("%w: unknown type %d", ErrBadFrame, uint16(f.Type))
	}
	if n > MaxPayload {
		return Frame{}, 0, fmt.Errorf("%w: %s payload of %d bytes (at most %d)", ErrBadFrame, f.Type, n, MaxPayload)
	}
	if f.Offset > 1<<62 {
		return Frame{}, 0, fmt.Errorf("%w: %s offset %d out of range", ErrBadFrame, f.Type, f.Offset)
	}
	switch f.Type {
	case FrameWrite, FrameResyncData, FrameReadReply:
		// data and one crc per block: length bytes of data, length/BlockSize crcs
		if f.Length%BlockSize != 0 || f.Offset%BlockSize != 0 {
			return Frame{}, 0, fmt.Errorf("%w: %s at %d+%d is not block aligned", ErrBadFrame, f.Type, f.Offset, f.Length)
		}
		if uint64(n) != uint64(f.Length)+uint64(f.Length/BlockSize)*4 {
			return Frame{}, 0, fmt.Errorf("%w: %s of %d bytes carries %d payload bytes, want %d", ErrBadFrame, f.Type, f.Length, n, f.Length+f.Length/BlockSize*4)
		}
	case FrameVerifyReply:
		if uint64(n) != uint64(f.Length/BlockSize)*5 || f.Length%BlockSize != 0 {
			return Frame{}, 0, fmt.Errorf("%w: %s for %d bytes carries %d payload bytes", ErrBadFrame, f.Type, f.Length, n)
		}
	case FrameRead, FrameVerify, FrameTrim, FrameZero:
		if n != 0 {
			return Frame{}, 0, fmt.Errorf("%w: %s carries a payload", ErrBadFrame, f.Type)
		}
		if f.Length > MaxPayload {
			return Frame{}, 0, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrBadFrame, f.Type, f.Length, MaxPayload)
		}
		if (f.Type == FrameRead || f.Type == FrameVerify) && (f.Length%BlockSize != 0 || f.Offset%BlockSize != 0) {
			return Frame{}, 0, fmt.Errorf("%w: %s at %d+%d is not block aligned", ErrBadFrame, f.Type, f.Offset, f.Length)
		}
	}
	return f, n, nil
}

func putHeader(h []byte, f *Frame) {
	copy(h, frameMagic)
	binary.BigEndian.PutUint16(h[4:], uint16(f.Type))
	binary.BigEndian.PutUint16(h[6:], f.Flags)
	binary.BigEndian.PutUint64(h[8:], f.ID)
	binary.BigEndian.PutUint64(h[16:], f.Offset)
	binary.BigEndian.PutUint32(h[24:], f.Length)
	binary.BigEndian.PutUint32(h[28:], uint32(len(f.Payload)))
}

// frameReader decodes frames from a stream.
type frameReader struct {
	r   *bufio.Reader
	hdr [frameHeaderSize]byte
	// pool, if set, provides payload buffers; the caller returns them.
	pool *bufpool.Pool
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 256<<10)}
}

// Next reads one frame. The payload is freshly allocated: the caller owns it.
func (fr *frameReader) Next() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Frame{}, err
	}
	f, n, err := parseHeader(fr.hdr[:])
	if err != nil {
		return Frame{}, err
	}
	if n > 0 {
		if fr.pool != nil {
			f.Payload = fr.pool.Get(int(n))
		} else {
			f.Payload = make([]byte, n)
		}
		if _, err := io.ReadFull(fr.r, f.Payload); err != nil {
			return Frame{}, fmt.Errorf("%s payload: %w", f.Type, err)
		}
	}
	return f, nil
}

// frameWriter encodes frames onto a stream; the caller serialises calls.
type frameWriter struct {
	w   *bufio.Writer
	hdr [frameHeaderSize]byte
}

func newFrameWriter(w io.Writer) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, 256<<10)}
}

// Write queues a frame; Flush sends what is queued.
func (fw *frameWriter) Write(f *Frame) error {
	putHeader(fw.hdr[:], f)
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(f.Payload)
	return err
}

// WriteParts queues a frame whose payload is the concatenation of parts,
// without copying them together.
func (fw *frameWriter) WriteParts(f *Frame, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	putHeader(fw.hdr[:], f)
	binary.BigEndian.PutUint32(fw.hdr[28:], uint32(n))
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := fw.w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

func (fw *frameWriter) Flush() error { return fw.w.Flush() }
