package tandeminit

import (
	"os"
	"sync"

	"github.com/u-root/u-root/pkg/cmdline"
	"golang.org/x/sys/unix"
)

// consoles is where tandem-init's log goes: every console= device of the
// kernel command line, written directly. u-root's init would hand us a
// pipe that it copies to them, and lines still in that pipe are lost when
// the node reboots; written here they can be drained first.
//
// A console is reopened when a write fails: when the shell on it (its
// session leader) exits, the kernel hangs the terminal up and every open
// descriptor of it fails from then on.
type consoles struct {
	mu   sync.Mutex
	ttys []*tty
}

type tty struct {
	path string
	f    *os.File
}

func openConsoles() *consoles {
	c := &consoles{}
	for _, name := range cmdline.Consoles() {
		t := &tty{path: "/dev/" + name}
		if t.open() == nil {
			c.ttys = append(c.ttys, t)
		}
	}
	return c
}

func (t *tty) open() error {
	f, err := os.OpenFile(t.path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	t.f = f
	return nil
}

// Write writes p to every console, reopening one that was hung up.
func (c *consoles) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ttys) == 0 {
		return os.Stdout.Write(p)
	}
	for _, t := range c.ttys {
		if _, err := t.f.Write(p); err != nil {
			t.f.Close()
			if t.open() == nil {
				_, _ = t.f.Write(p)
			}
		}
	}
	return len(p), nil
}

// drain waits until every console has sent what was written to it
// (tcdrain), so the last lines before a reboot reach the operator.
func (c *consoles) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.ttys {
		_ = unix.IoctlSetInt(int(t.f.Fd()), unix.TCSBRK, 1)
	}
}
