package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func frameBytes(f Frame) []byte {
	var b bytes.Buffer
	fw := newFrameWriter(&b)
	fw.Write(&f)
	fw.Flush()
	return b.Bytes()
}

// FuzzFrameReader feeds the replication stream decoder arbitrary bytes: it
// returns frames that satisfy its own checks or an error, never panics, and
// never allocates more than the header allows.
func FuzzFrameReader(f *testing.F) {
	f.Add(frameBytes(Frame{Type: FramePing, ID: 1}))
	f.Add(frameBytes(Frame{Type: FrameWrite, ID: 2, Offset: 4096, Length: BlockSize, Payload: make([]byte, BlockSize+4)}))
	f.Add(frameBytes(Frame{Type: FrameHello, Payload: []byte(`{"protocol":1}`)}))
	f.Add(frameBytes(Frame{Type: FrameVerifyReply, Length: BlockSize, Payload: make([]byte, 5)}))
	f.Add([]byte("TREP\x00\x04\x00\x00"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		for i := 0; i < 100; i++ {
			frame, err := fr.Next()
			if err != nil {
				if !errors.Is(err, ErrBadFrame) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if frame.Type == 0 || frame.Type >= frameTypeEnd || len(frame.Payload) > MaxPayload {
				t.Fatalf("accepted a bad frame: %+v", frame)
			}
			switch frame.Type {
			case FrameWrite, FrameResyncData, FrameReadReply:
				if len(frame.Payload) != int(frame.Length)+int(frame.Length/BlockSize)*4 || frame.Length%BlockSize != 0 {
					t.Fatalf("%s with length %d and %d payload bytes accepted", frame.Type, frame.Length, len(frame.Payload))
				}
			}
		}
	})
}

func TestBadFrames(t *testing.T) {
	hdr := func(typ FrameType, off uint64, length, payload uint32) []byte {
		h := make([]byte, frameHeaderSize)
		copy(h, frameMagic)
		binary.BigEndian.PutUint16(h[4:], uint16(typ))
		binary.BigEndian.PutUint64(h[16:], off)
		binary.BigEndian.PutUint32(h[24:], length)
		binary.BigEndian.PutUint32(h[28:], payload)
		return h
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"foreign protocol", []byte("NBDMAGIC\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")},
		{"unknown type", hdr(99, 0, 0, 0)},
		{"oversized payload", hdr(FrameHello, 0, 0, MaxPayload+1)},
		{"unaligned write", hdr(FrameWrite, 100, BlockSize, BlockSize+4)},
		{"write without checksums", hdr(FrameWrite, 0, BlockSize, BlockSize)},
		{"read with payload", hdr(FrameRead, 0, BlockSize, 1)},
		{"huge offset", hdr(FrameTrim, 1<<63, BlockSize, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newFrameReader(bytes.NewReader(tc.in)).Next()
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("got %v, want ErrBadFrame", err)
			}
		})
	}
}
