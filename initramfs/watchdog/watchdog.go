// Package watchdog drives a Linux hardware watchdog (/dev/watchdog): once
// opened it resets the machine unless it is pet within its timeout. The
// supervisor pets it only while it and its critical services are healthy,
// so a hung node resets itself.
package watchdog

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl numbers from linux/watchdog.h.
const (
	wdiocKeepalive  = 0x80045705 // _IOR('W', 5, int)
	wdiocSetTimeout = 0xc0045706 // _IOWR('W', 6, int)
)

// Device is an armed watchdog.
type Device struct {
	f       *os.File
	timeout time.Duration
}

// Open arms the watchdog at path with the given timeout (whole seconds).
// The driver may round the timeout; Timeout reports what it took.
func Open(path string, timeout time.Duration) (*Device, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	secs := int32(timeout / time.Second)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), wdiocSetTimeout, uintptr(unsafe.Pointer(&secs))); errno != 0 {
		f.Close()
		return nil, fmt.Errorf("watchdog %s: set timeout %ds: %w", path, int32(timeout/time.Second), errno)
	}
	return &Device{f: f, timeout: time.Duration(secs) * time.Second}, nil
}

// Timeout is the timeout the driver accepted.
func (d *Device) Timeout() time.Duration { return d.timeout }

// Pet restarts the countdown.
func (d *Device) Pet() error {
	var dummy int32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), wdiocKeepalive, uintptr(unsafe.Pointer(&dummy))); errno != 0 {
		return fmt.Errorf("watchdog keepalive: %w", errno)
	}
	return nil
}

// Disarm stops the watchdog with the magic close ('V' then close), for a
// clean power-off. Drivers built with nowayout ignore it.
func (d *Device) Disarm() error {
	if _, err := d.f.Write([]byte("V")); err != nil {
		d.f.Close()
		return fmt.Errorf("watchdog magic close: %w", err)
	}
	return d.f.Close()
}
