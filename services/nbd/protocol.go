// Package nbd is a Network Block Device server (the fixed newstyle
// handshake and simple replies of the NBD protocol), the way QEMU's `nbd`
// block driver, qemu-io and qemu-img reach Tandem's volumes: over a Unix
// socket, with FLUSH, FUA, TRIM and WRITE_ZEROES, and many requests in
// flight on one connection.
//
// The server parses everything a client sends with explicit bounds: a
// malformed option is answered with an error reply, a malformed request
// ends the connection (the protocol has no way to resynchronise), and a
// request out of range gets EINVAL or ENOSPC. A backend error becomes an
// errno in the reply; the connection and the other requests go on.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Magic numbers and codes of the protocol (the NBD protocol document,
// "doc/proto.md" of the NBD project).
const (
	magicInit        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt         = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimpleReply = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFlagFixedNewstyle = 1 << 0
	clientFlagNoZeroes      = 1 << 1
)

// Options.
const (
	optExportName       = 1
	optAbort            = 2
	optList             = 3
	optStartTLS         = 5
	optInfo             = 6
	optGo               = 7
	optStructuredReply  = 8
	optListMetaContext  = 9
	optSetMetaContext   = 10
	optExtendedHeaders  = 11
	maxOptionLength     = 64 << 10 // no option we accept needs more
	maxExportNameLength = 4096     // the protocol's own limit
)

// Option replies.
const (
	repAck       = 1
	repServer    = 2
	repInfo      = 3
	repErrUnsup  = 1<<31 + 1
	repErrPolicy = 1<<31 + 2
	repErrInval  = 1<<31 + 3
	repErrUnknwn = 1<<31 + 6
	repErrTooBig = 1<<31 + 9
)

// Info types in NBD_REP_INFO.
const (
	infoExport    = 0
	infoName      = 1
	infoBlockSize = 3
)

// Transmission flags.
const (
	tfHasFlags        = 1 << 0
	tfReadOnly        = 1 << 1
	tfSendFlush       = 1 << 2
	tfSendFUA         = 1 << 3
	tfSendTrim        = 1 << 5
	tfSendWriteZeroes = 1 << 6
	tfCanMultiConn    = 1 << 8
)

// Commands and their flags.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6

	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
)

// Errno values carried in replies.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

// Errno is an error a backend returns to choose the errno of the reply;
// any other error is EIO.
type Errno uint32

func (e Errno) Error() string {
	names := map[Errno]string{EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL", ENOSPC: "ENOSPC",
		EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN"}
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// ErrnoOf maps a backend error to the errno of its reply.
func ErrnoOf(err error) uint32 {
	if err == nil {
		return 0
	}
	var e Errno
	if errors.As(err, &e) {
		return uint32(e)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// A full disk: QEMU pauses the VM (werror=enospc) rather than
		// failing the guest's write, and resumes once there is room.
		return uint32(ENOSPC)
	}
	return uint32(EIO)
}

// Request is one transmission-phase request, as parsed from the wire.
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

const requestSize = 28

// ErrBadMagic means the client sent something that is not an NBD request;
// the connection cannot go on.
var ErrBadMagic = errors.New("nbd: request without the request magic")

// ParseRequest decodes a request header.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < requestSize {
		return Request{}, fmt.Errorf("nbd: request header of %d bytes, want %d", len(b), requestSize)
	}
	if binary.BigEndian.Uint32(b[0:]) != magicRequest {
		return Request{}, ErrBadMagic
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   binary.BigEndian.Uint16(b[6:]),
		Handle: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// option is one handshake option from the client.
type option struct {
	code uint32
	data []byte
}

// readOption reads an option header and its data, refusing data longer
// than any option needs (it is drained, not kept).
func readOption(r io.Reader) (option, bool, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return option{}, false, err
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOpt {
		return option{}, false, errors.New("nbd: option without the option magic")
	}
	o := option{code: binary.BigEndian.Uint32(h[8:])}
	n := binary.BigEndian.Uint32(h[12:])
	if n > maxOptionLength {
		// Too big to be honest; skip it so the client gets an answer.
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return o, false, err
		}
		return o, true, nil
	}
	o.data = make([]byte, n)
	if _, err := io.ReadFull(r, o.data); err != nil {
		return o, false, err
	}
	return o, false, nil
}

// goRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type goRequest struct {
	name  string
	infos []uint16
}

// parseGo decodes NBD_OPT_INFO / NBD_OPT_GO data: a name and the info
// types the client asks for.
func parseGo(b []byte) (goRequest, error) {
	if len(b) < 4 {
		return goRequest{}, errors.New("option data too short for a name length")
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxExportNameLength || uint64(len(b)) < 4+uint64(n)+2 {
		return goRequest{}, fmt.Errorf("export name of %d bytes does not fit the option", n)
	}
	g := goRequest{name: string(b[4 : 4+n])}
	rest := b[4+n:]
	count := binary.BigEndian.Uint16(rest)
	rest = rest[2:]
	if len(rest) != int(count)*2 {
		return goRequest{}, fmt.Errorf("%d info requests announced, %d bytes of them sent", count, len(rest))
	}
	for i := 0; i < int(count); i++ {
		g.infos = append(g.infos, binary.BigEndian.Uint16(rest[2*i:]))
	}
	return g, nil
}
