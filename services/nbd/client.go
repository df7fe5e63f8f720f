package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ListExports asks the NBD server at addr which exports it offers
// (NBD_OPT_LIST), the way a service checks that a disk is being served
// before it starts QEMU on it.
func ListExports(ctx context.Context, network, addr string) ([]string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	r := bufio.NewReader(c)
	var hello [18]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return nil, fmt.Errorf("nbd: greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hello[0:]) != magicInit || binary.BigEndian.Uint64(hello[8:]) != magicOpt ||
		binary.BigEndian.Uint16(hello[16:])&flagFixedNewstyle == 0 {
		return nil, errors.New("nbd: not a fixed newstyle server")
	}
	var out [4 + 16]byte
	binary.BigEndian.PutUint32(out[0:], clientFlagFixedNewstyle|clientFlagNoZeroes)
	binary.BigEndian.PutUint64(out[4:], magicOpt)
	binary.BigEndian.PutUint32(out[12:], optList)
	if _, err := c.Write(out[:]); err != nil {
		return nil, err
	}
	var names []string
	for {
		var h [20]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, fmt.Errorf("nbd: list reply: %w", err)
		}
		typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
		if binary.BigEndian.Uint64(h[0:]) != magicOptReply || n > maxOptionLength {
			return nil, errors.New("nbd: malformed list reply")
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, err
		}
		switch typ {
		case repServer:
			if len(data) < 4 || int(binary.BigEndian.Uint32(data)) > len(data)-4 {
				return nil, errors.New("nbd: malformed export name")
			}
			names = append(names, string(data[4:4+binary.BigEndian.Uint32(data)]))
		case repAck:
			var abort [16]byte
			binary.BigEndian.PutUint64(abort[0:], magicOpt)
			binary.BigEndian.PutUint32(abort[8:], optAbort)
			_, _ = c.Write(abort[:])
			return names, nil
		default:
			return nil, fmt.Errorf("nbd: list refused (reply %#x): %s", typ, data)
		}
	}
}
