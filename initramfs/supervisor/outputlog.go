package supervisor

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// maxLine cuts longer output lines into pieces, so a service that never
// writes a newline cannot make the supervisor hold unbounded memory.
const maxLine = 4096

// outputLog keeps a service's last lines in memory and appends every line
// to a log file that is rotated by size.
type outputLog struct {
	mu   sync.Mutex
	ring []statusapi.LogLine
	next int // index of the oldest line once the ring is full
	full bool
	file *rotatingFile
}

func newOutputLog(log *slog.Logger, lines int, dir, name string, maxBytes int64, keep int) *outputLog {
	l := &outputLog{ring: make([]statusapi.LogLine, lines)}
	if dir != "" {
		l.file = &rotatingFile{log: log, path: filepath.Join(dir, name+".log"), maxBytes: maxBytes, keep: keep}
	}
	return l
}

// consume reads a process's output until EOF (every writer closed).
func (l *outputLog) consume(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, _, err := br.ReadLine() // a line over maxLine comes in pieces
		if len(line) > 0 || err == nil {
			l.add(time.Now(), string(line))
		}
		if err != nil {
			return
		}
	}
}

func (l *outputLog) add(t time.Time, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = statusapi.LogLine{Time: t, Text: text}
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	if l.file != nil {
		l.file.writeLine(t, text)
	}
}

// last returns up to n of the newest lines, oldest first.
func (l *outputLog) last(n int) []statusapi.LogLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []statusapi.LogLine
	if l.full {
		all = append(all, l.ring[l.next:]...)
	}
	all = append(all, l.ring[:l.next]...)
	if n > 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}

func (l *outputLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.close()
	}
}

// rotatingFile appends lines to path; past maxBytes it renames path to
// path.1 (path.1 to path.2 and so on, keeping keep of them) and starts anew.
type rotatingFile struct {
	log      *slog.Logger
	path     string
	maxBytes int64
	keep     int

	f        *os.File
	size     int64
	retryAt  time.Time // after an open error, do not retry on every line
	errShown bool
}

func (r *rotatingFile) writeLine(t time.Time, text string) {
	if r.f == nil && !r.open() {
		return
	}
	line := fmt.Sprintf("%s %s\n", t.UTC().Format(time.RFC3339Nano), text)
	if r.size+int64(len(line)) > r.maxBytes && r.size > 0 {
		r.rotate()
		if r.f == nil && !r.open() {
			return
		}
	}
	n, err := r.f.WriteString(line)
	r.size += int64(n)
	if err != nil {
		// Disk full or gone: drop to memory-only until a retry succeeds.
		r.f.Close()
		r.f = nil
		r.retryAt = time.Now().Add(30 * time.Second)
	}
}

func (r *rotatingFile) open() bool {
	if time.Now().Before(r.retryAt) {
		return false
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		r.retryAt = time.Now().Add(30 * time.Second)
		if !r.errShown {
			r.log.Warn("log file unavailable; keeping the log in memory only", "path", r.path, "err", err)
			r.errShown = true
		}
		return false
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		r.retryAt = time.Now().Add(30 * time.Second)
		return false
	}
	r.f, r.size = f, st.Size()
	return true
}

func (r *rotatingFile) rotate() {
	r.close()
	for i := r.keep - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", r.path, i), fmt.Sprintf("%s.%d", r.path, i+1))
	}
	_ = os.Rename(r.path, r.path+".1")
}

func (r *rotatingFile) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}
