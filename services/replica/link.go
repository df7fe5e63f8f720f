package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is the primary's end of a replication stream: requests go out with
// fresh ids and their replies, in any order, are matched back by id.
type link struct {
	conn net.Conn
	peer string

	wmu sync.Mutex
	fw  *frameWriter

	mu      sync.Mutex
	pending map[uint64]chan reply
	err     error // set once: the link is closed
	done    chan struct{}

	nextID   atomic.Uint64
	lastRecv atomic.Int64 // unix nanoseconds
}

type reply struct {
	f   Frame
	err error
}

// errLinkClosed is what requests on a closed link get.
var errLinkClosed = errors.New("replication stream closed")

func newLink(conn net.Conn, fr *frameReader, peer string, timeout time.Duration) *link {
	l := &link{conn: conn, peer: peer, fw: newFrameWriter(conn), pending: map[uint64]chan reply{}, done: make(chan struct{})}
	l.lastRecv.Store(time.Now().UnixNano())
	go l.readLoop(fr)
	go l.keepAlive(timeout)
	return l
}

// send queues f (with its payload parts) and returns where its reply will
// arrive.
func (l *link) send(f *Frame, parts ...[]byte) <-chan reply {
	ch := make(chan reply, 1)
	f.ID = l.nextID.Add(1)
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		ch <- reply{err: l.err}
		return ch
	}
	l.pending[f.ID] = ch
	l.mu.Unlock()
	l.wmu.Lock()
	err := l.fw.WriteParts(f, parts...)
	if err == nil {
		err = l.fw.Flush()
	}
	l.wmu.Unlock()
	if err != nil {
		l.close(fmt.Errorf("send %s: %w", f.Type, err))
	}
	return ch
}

// call sends f and waits for its reply.
func (l *link) call(f *Frame, parts ...[]byte) (Frame, error) {
	r := <-l.send(f, parts...)
	if r.err != nil {
		return Frame{}, r.err
	}
	if r.f.Type == FrameError {
		return r.f, fmt.Errorf("peer: %s", r.f.Payload)
	}
	return r.f, nil
}

func (l *link) readLoop(fr *frameReader) {
	for {
		f, err := fr.Next()
		if err != nil {
			l.close(fmt.Errorf("receive: %w", err))
			return
		}
		l.lastRecv.Store(time.Now().UnixNano())
		if f.Type == FrameRefuse {
			l.close(fmt.Errorf("peer refused: %s", f.Payload))
			return
		}
		l.mu.Lock()
		ch := l.pending[f.ID]
		delete(l.pending, f.ID)
		l.mu.Unlock()
		if ch == nil {
			l.close(fmt.Errorf("%w: %s reply to unknown request %d", ErrBadFrame, f.Type, f.ID))
			return
		}
		ch <- reply{f: f}
	}
}

// keepAlive pings the peer every second and closes the link when nothing
// has come back for timeout: a peer whose node lost power sends no RST.
func (l *link) keepAlive(timeout time.Duration) {
	t := time.NewTicker(min(time.Second, timeout/3))
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		if silent := time.Since(time.Unix(0, l.lastRecv.Load())); silent > timeout {
			l.close(fmt.Errorf("peer silent for %s", silent.Round(time.Millisecond)))
			return
		}
		l.send(&Frame{Type: FramePing}) // the reply only refreshes lastRecv
	}
}

// close fails every pending request with err; it reports whether this
// call closed the link.
func (l *link) close(err error) bool {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return false
	}
	l.err = fmt.Errorf("%w: %w", errLinkClosed, err)
	pending := l.pending
	l.pending = nil
	close(l.done)
	l.mu.Unlock()
	l.conn.Close()
	for _, ch := range pending {
		ch <- reply{err: l.err}
	}
	return true
}

// closed returns the error the link closed with, nil while open.
func (l *link) closed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func putCRCs(crcs []uint32) []byte {
	b := make([]byte, 4*len(crcs))
	for i, c := range crcs {
		binary.BigEndian.PutUint32(b[4*i:], c)
	}
	return b
}

func getCRCs(b []byte, crcs []uint32) []uint32 {
	for i := 0; i+4 <= len(b); i += 4 {
		crcs = append(crcs, binary.BigEndian.Uint32(b[i:]))
	}
	return crcs
}
