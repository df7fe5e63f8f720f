package tandemctl

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// dial opens one of the API's websockets.
func (e *env) dial(path string) (*websocket.Conn, error) {
	tr, _ := e.c.hc.Transport.(*http.Transport)
	d := websocket.Dialer{HandshakeTimeout: 15 * time.Second}
	if tr != nil {
		d.TLSClientConfig = tr.TLSClientConfig.Clone()
	} else {
		d.TLSClientConfig = &tls.Config{}
	}
	h := http.Header{}
	e.c.authorize(h)
	ws, resp, err := d.DialContext(e.ctx, "wss://"+strings.TrimPrefix(e.c.server, "https://")+path, h)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			_ = json.Unmarshal(b, &body)
			return nil, &apiError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
		}
		return nil, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	return ws, nil
}

// events prints the events websocket's messages, one JSON line each,
// until interrupted or, with -n, after n of them.
func (e *env) events(args []string) error {
	var n int
	if _, err := e.flags("events", args, func(fs *flag.FlagSet) { fs.IntVar(&n, "n", 0, "stop after n messages") }, 0); err != nil {
		return err
	}
	ws, err := e.dial("/api/v1/events")
	if err != nil {
		return err
	}
	defer ws.Close()
	go func() {
		<-e.ctx.Done()
		ws.Close()
	}()
	for i := 0; n == 0 || i < n; i++ {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if e.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: the event stream ended: %v", errNoAnswer, err)
		}
		fmt.Fprintln(e.out, string(msg))
	}
	return nil
}

// vmConsole joins the terminal to the VM's serial port, raw, until
// Ctrl-] or the VM's end.
func (e *env) vmConsole(args []string) error {
	pos, err := e.flags("vm console", args, nil, 1)
	if err != nil {
		return err
	}
	ws, err := e.dial("/api/v1/vmm/vms/" + url.PathEscape(pos[0]) + "/console/serial")
	if err != nil {
		return err
	}
	defer ws.Close()
	if f, ok := e.in.(*os.File); ok {
		if restore, err := rawTerminal(int(f.Fd())); err == nil {
			defer restore()
			fmt.Fprint(e.err, "connected; Ctrl-] leaves\r\n")
		}
	}
	done := make(chan error, 1)
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				done <- nil
				return
			}
			if _, err := e.out.Write(msg); err != nil {
				done <- err
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := e.in.Read(buf)
			if n > 0 {
				if i := strings.IndexByte(string(buf[:n]), 0x1d); i >= 0 { // Ctrl-]
					if i > 0 {
						_ = ws.WriteMessage(websocket.BinaryMessage, buf[:i])
					}
					done <- nil
					return
				}
				if ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					done <- nil
					return
				}
			}
			if err != nil {
				// The input ended (a script's pipe): give the guest a
				// moment to answer what was sent.
				time.Sleep(2 * time.Second)
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case <-e.ctx.Done():
		return nil
	}
}

// rawTerminal puts the terminal fd in raw mode and returns what undoes
// it.
func rawTerminal(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// readPassword reads a line without echo when the input is a terminal.
func (e *env) readPassword(prompt string) (string, error) {
	if f, ok := e.in.(*os.File); ok {
		fd := int(f.Fd())
		if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			quiet := *old
			quiet.Lflag &^= unix.ECHO
			if unix.IoctlSetTermios(fd, unix.TCSETS, &quiet) == nil {
				defer func() {
					_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
					fmt.Fprintln(e.err)
				}()
			}
		}
	}
	return e.readLine(prompt)
}
