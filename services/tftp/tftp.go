// Package tftp serves the boot loaders PXE ROMs fetch before they can
// speak HTTP (iPXE for BIOS and for UEFI): read-only, only the files it
// is given, and no name that could reach anything else. Block size and
// transfer size (RFC 2348, 2349) are negotiated; writes are refused.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// Config is the server's configuration.
type Config struct {
	Listen string // e.g. "192.0.2.1:69"; the provisioning interface only
	Files  fs.FS  // what may be read, by name
	Logger *slog.Logger
}

// Server is the TFTP server.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New checks the configuration.
func New(cfg Config) (*Server, error) {
	if cfg.Files == nil || cfg.Listen == "" {
		return nil, errors.New("tftp: Listen and Files are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	conn, err := net.ListenPacket("udp4", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	return s.Serve(ctx, conn)
}

// Serve serves on conn until ctx ends.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(s.read, nil)
	srv.SetTimeout(2 * time.Second)
	srv.SetRetries(5)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	select {
	case <-ctx.Done():
		srv.Shutdown()
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("tftp: %w", err)
	}
}

// read sends one file, with its size for the tsize option.
func (s *Server) read(name string, rf io.ReaderFrom) error {
	from := ""
	if t, ok := rf.(tftp.OutgoingTransfer); ok {
		addr := t.RemoteAddr()
		from = addr.String()
	}
	clean, err := CleanName(name)
	if err != nil {
		s.log.Warn("tftp: refused", "file", fmt.Sprintf("%q", name), "from", from, "err", err)
		return err
	}
	f, err := s.cfg.Files.Open(clean)
	if err != nil {
		s.log.Warn("tftp: no such file", "file", clean, "from", from)
		return fmt.Errorf("no file %q", clean)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("no file %q", clean)
	}
	if t, ok := rf.(tftp.OutgoingTransfer); ok {
		t.SetSize(st.Size())
	}
	n, err := rf.ReadFrom(f)
	s.log.Info("tftp: sent", "file", clean, "bytes", n, "to", from, "err", err)
	return err
}

// maxName bounds a file name: boot loaders' names are short.
const maxName = 128

// CleanName turns a requested name into a name of Files, or says why it
// is refused: empty or too long, with a NUL, a backslash, a control
// character or a dot segment. A leading slash is dropped (some ROMs send
// /undionly.kpxe).
func CleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "/")
	switch {
	case n == "" || len(name) > maxName:
		return "", fmt.Errorf("file name of %d bytes: want 1 to %d", len(name), maxName)
	case strings.ContainsAny(n, "\\\x00"):
		return "", errors.New("file name with a backslash or a NUL")
	}
	for _, r := range n {
		if r < 0x20 || r == 0x7f {
			return "", errors.New("file name with a control character")
		}
	}
	if !fs.ValidPath(n) {
		return "", errors.New("file name with an empty or dot segment")
	}
	return n, nil
}
