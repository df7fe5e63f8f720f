package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/tandemhci/tandem/services/bufpool"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Backend is the block device behind an export. Every method may be
// called from many goroutines at once; offsets and lengths are already
// checked against Size.
type Backend interface {
	Size() int64
	ReadAt(p []byte, off int64) error
	// WriteAt writes p; with fua it returns only once p is durable.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush returns once every write acknowledged before it is durable.
	Flush() error
	// Trim says the range's contents are no longer needed (it may read
	// back as zeroes or as the old data).
	Trim(off, length int64) error
	// WriteZeroes makes the range read as zeroes.
	WriteZeroes(off, length int64, fua bool) error
}

// Export is a named block device the server offers.
type Export struct {
	Name     string
	Backend  Backend
	ReadOnly bool
	// Block sizes announced to clients that ask (QEMU does): requests
	// are then aligned to MinBlock. Zero: 1, 4096 and MaxRequest.
	MinBlock, PreferredBlock uint32
	// Hold, when set, is called as a client starts using the export and
	// its result when the client leaves, so the owner knows the export
	// is in use.
	Hold func() (release func())
}

// MaxRequest bounds a read or write; clients learn it through the block
// size info, and larger requests are refused with EINVAL.
const MaxRequest = 32 << 20

// Config configures a server.
type Config struct {
	// Lookup finds an export by the name a client asks for.
	Lookup func(name string) (Export, bool)
	// Names lists the exports for NBD_OPT_LIST; nil lists none.
	Names       func() []string
	MaxInFlight int // requests handled at once per connection (default 64)
	Logger      *slog.Logger
}

// Server serves NBD connections.
type Server struct {
	cfg  Config
	log  *slog.Logger
	bufs *bufpool.Pool
}

// New makes a server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	return &Server{cfg: cfg, log: cfg.Logger, bufs: &bufpool.Pool{}}
}

// Serve accepts connections until ctx ends or the listener fails, and
// closes the listener and every connection on the way out.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c); err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log.Warn("nbd connection ended", "err", err)
			}
		}()
	}
}

// ServeConn runs the handshake and then serves requests until the client
// disconnects, sends garbage, or ctx ends.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	br := bufio.NewReaderSize(c, 128<<10)
	exp, told, err := s.handshake(br, c)
	if err != nil || exp == nil {
		return err
	}
	if exp.Hold != nil {
		defer exp.Hold()()
	}
	t := &transmission{s: s, exp: *exp, conn: c, size: uint64(exp.Backend.Size()), sem: make(chan struct{}, s.cfg.MaxInFlight), aligned: told}
	return t.run(br)
}

// handshake runs the fixed newstyle negotiation and returns the export
// the client chose (nil when it went away politely), and whether it was
// told the block sizes (NBD_OPT_GO does, NBD_OPT_EXPORT_NAME does not).
func (s *Server) handshake(r io.Reader, w io.Writer) (*Export, bool, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicInit)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := w.Write(hello[:]); err != nil {
		return nil, false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(r, cf[:]); err != nil {
		return nil, false, fmt.Errorf("nbd: client flags: %w", err)
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&clientFlagFixedNewstyle == 0 || clientFlags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return nil, false, fmt.Errorf("nbd: client flags %#x: only fixed newstyle clients are served", clientFlags)
	}
	noZeroes := clientFlags&clientFlagNoZeroes != 0
	for i := 0; ; i++ {
		if i > 1000 {
			return nil, false, errors.New("nbd: too many options without choosing an export")
		}
		o, tooBig, err := readOption(r)
		if err != nil {
			return nil, false, fmt.Errorf("nbd: option: %w", err)
		}
		if tooBig {
			if err := optReply(w, o.code, repErrTooBig, []byte("option data too long")); err != nil {
				return nil, false, err
			}
			continue
		}
		switch o.code {
		case optExportName:
			exp, ok := s.lookup(string(o.data))
			if !ok {
				return nil, false, fmt.Errorf("nbd: client asked for unknown export %q", o.data)
			}
			var b [10 + 124]byte
			binary.BigEndian.PutUint64(b[0:], uint64(exp.Backend.Size()))
			binary.BigEndian.PutUint16(b[8:], transmissionFlags(exp))
			n := len(b)
			if noZeroes {
				n = 10
			}
			if _, err := w.Write(b[:n]); err != nil {
				return nil, false, err
			}
			return &exp, false, nil
		case optAbort:
			_ = optReply(w, o.code, repAck, nil)
			return nil, false, nil
		case optList:
			if len(o.data) != 0 {
				if err := optReply(w, o.code, repErrInval, []byte("NBD_OPT_LIST takes no data")); err != nil {
					return nil, false, err
				}
				continue
			}
			if s.cfg.Names != nil {
				for _, n := range s.cfg.Names() {
					d := make([]byte, 4+len(n))
					binary.BigEndian.PutUint32(d, uint32(len(n)))
					copy(d[4:], n)
					if err := optReply(w, o.code, repServer, d); err != nil {
						return nil, false, err
					}
				}
			}
			if err := optReply(w, o.code, repAck, nil); err != nil {
				return nil, false, err
			}
		case optInfo, optGo:
			g, err := parseGo(o.data)
			if err != nil {
				if err := optReply(w, o.code, repErrInval, []byte(err.Error())); err != nil {
					return nil, false, err
				}
				continue
			}
			exp, ok := s.lookup(g.name)
			if !ok {
				if err := optReply(w, o.code, repErrUnknwn, []byte("no export named "+g.name)); err != nil {
					return nil, false, err
				}
				continue
			}
			if err := s.sendInfo(w, o.code, exp, g); err != nil {
				return nil, false, err
			}
			if err := optReply(w, o.code, repAck, nil); err != nil {
				return nil, false, err
			}
			if o.code == optGo {
				return &exp, true, nil
			}
		case optStartTLS:
			// The socket is local and root-only; TLS is the front door's.
			if err := optReply(w, o.code, repErrPolicy, []byte("TLS is not offered on this socket")); err != nil {
				return nil, false, err
			}
		default:
			// Structured replies, meta contexts, extended headers: not
			// offered; clients fall back to simple replies.
			if err := optReply(w, o.code, repErrUnsup, nil); err != nil {
				return nil, false, err
			}
		}
	}
}

func (s *Server) lookup(name string) (Export, bool) {
	if s.cfg.Lookup == nil {
		return Export{}, false
	}
	e, ok := s.cfg.Lookup(name)
	if ok && e.Name == "" {
		e.Name = name
	}
	return e, ok && e.Backend != nil
}

func (s *Server) sendInfo(w io.Writer, code uint32, exp Export, g goRequest) error {
	var b [12]byte
	binary.BigEndian.PutUint16(b[0:], infoExport)
	binary.BigEndian.PutUint64(b[2:], uint64(exp.Backend.Size()))
	binary.BigEndian.PutUint16(b[10:], transmissionFlags(exp))
	if err := optReply(w, code, repInfo, b[:]); err != nil {
		return err
	}
	// Block sizes go to every client: QEMU asks, and aligns to them.
	minB, pref := exp.MinBlock, exp.PreferredBlock
	if minB == 0 {
		minB = 1
	}
	if pref == 0 {
		pref = 4096
	}
	var bs [14]byte
	binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
	binary.BigEndian.PutUint32(bs[2:], minB)
	binary.BigEndian.PutUint32(bs[6:], pref)
	binary.BigEndian.PutUint32(bs[10:], MaxRequest)
	if err := optReply(w, code, repInfo, bs[:]); err != nil {
		return err
	}
	for _, t := range g.infos {
		if t == infoName {
			d := make([]byte, 2+len(exp.Name))
			binary.BigEndian.PutUint16(d, infoName)
			copy(d[2:], exp.Name)
			if err := optReply(w, code, repInfo, d); err != nil {
				return err
			}
		}
	}
	return nil
}

func transmissionFlags(e Export) uint16 {
	f := uint16(tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendWriteZeroes | tfCanMultiConn)
	if e.ReadOnly {
		f |= tfReadOnly
	}
	return f
}

func optReply(w io.Writer, code, typ uint32, data []byte) error {
	b := make([]byte, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], code)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	copy(b[20:], data)
	_, err := w.Write(b)
	return err
}

// transmission is one connection after the handshake.
type transmission struct {
	s    *Server
	exp  Export
	conn net.Conn
	size uint64
	sem  chan struct{}
	wg   sync.WaitGroup
	// aligned: the client was told MinBlock and must honour it.
	aligned bool

	wmu  sync.Mutex // one reply at a time on the wire
	werr error
}

func (t *transmission) run(r *bufio.Reader) error {
	defer t.wg.Wait()
	var hdr [requestSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		req, err := ParseRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.Type == cmdDisc {
			return nil
		}
		var payload []byte
		if req.Type == cmdWrite {
			// The payload follows whatever we decide: read it (or skip
			// it) to stay in step with the client.
			if req.Length > 2*MaxRequest {
				return fmt.Errorf("nbd: write of %d bytes: too large to stay in step with", req.Length)
			}
			payload = t.s.bufs.Get(int(req.Length))
			if _, err := io.ReadFull(r, payload); err != nil {
				t.s.bufs.Put(payload)
				return err
			}
		}
		if errno := t.check(req); errno != 0 {
			t.s.bufs.Put(payload)
			if err := t.reply(req.Handle, uint32(errno), nil); err != nil {
				return err
			}
			continue
		}
		t.sem <- struct{}{}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer func() { <-t.sem }()
			t.handle(req, payload)
		}()
		if t.writeErr() != nil {
			return t.writeErr()
		}
	}
}

// check refuses what the backend must never see: unknown commands, writes
// to a read-only export, ranges past the end, oversized requests.
func (t *transmission) check(req Request) Errno {
	end := req.Offset + uint64(req.Length)
	outside := end < req.Offset || end > t.size
	switch req.Type {
	case cmdRead:
		if req.Length > MaxRequest || outside {
			return EINVAL
		}
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		if t.exp.ReadOnly {
			return EPERM
		}
		if req.Type == cmdWrite && req.Length > MaxRequest {
			return EINVAL
		}
		if outside {
			return ENOSPC
		}
	case cmdFlush, cmdCache:
	default:
		return EINVAL
	}
	if t.aligned && t.exp.MinBlock > 1 && req.Type != cmdFlush {
		// Clients were told the alignment: honour it or say so.
		if req.Offset%uint64(t.exp.MinBlock) != 0 || uint64(req.Length)%uint64(t.exp.MinBlock) != 0 {
			return EINVAL
		}
	}
	return 0
}

func (t *transmission) handle(req Request, payload []byte) {
	b := t.exp.Backend
	off, n := int64(req.Offset), int64(req.Length)
	fua := req.Flags&cmdFlagFUA != 0
	var err error
	switch req.Type {
	case cmdRead:
		buf := t.s.bufs.Get(int(n))
		err = b.ReadAt(buf, off)
		if err != nil {
			t.s.bufs.Put(buf)
			_ = t.reply(req.Handle, ErrnoOf(err), nil)
			return
		}
		_ = t.reply(req.Handle, 0, buf)
		t.s.bufs.Put(buf)
		return
	case cmdWrite:
		err = b.WriteAt(payload, off, fua)
		t.s.bufs.Put(payload)
	case cmdFlush:
		err = b.Flush()
	case cmdTrim:
		err = b.Trim(off, n)
		if err == nil && fua {
			err = b.Flush()
		}
	case cmdWriteZeroes:
		err = b.WriteZeroes(off, n, fua)
	case cmdCache:
	}
	if err != nil {
		t.s.log.Debug("nbd request failed", "export", t.exp.Name, "type", req.Type, "offset", off, "length", n, "err", err)
	}
	_ = t.reply(req.Handle, ErrnoOf(err), nil)
}

func (t *transmission) reply(handle uint64, errno uint32, data []byte) error {
	var h [16]byte
	binary.BigEndian.PutUint32(h[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], handle)
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.werr != nil {
		return t.werr
	}
	bufs := net.Buffers{h[:]}
	if len(data) > 0 {
		bufs = append(bufs, data)
	}
	if _, err := bufs.WriteTo(t.conn); err != nil {
		t.werr = err
		t.conn.Close()
		return err
	}
	return nil
}

func (t *transmission) writeErr() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.werr
}
