package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// ServerConfig is the server's configuration.
type ServerConfig struct {
	// Interface is the provisioning interface: the socket is bound to it,
	// so no other network hears or gets an answer.
	Interface string
	// Port is the UDP port (default 67; a proxyDHCP server also takes
	// PXE clients' second requests on 4011).
	Port    int
	Handler *Handler
	Logger  *slog.Logger
}

// Server answers DHCP on one interface.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	srv *server4.Server
}

// NewServer binds the DHCP port on the interface (in the calling
// thread's network namespace).
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Interface == "" || cfg.Handler == nil {
		return nil, errors.New("dhcp: Interface and Handler are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Port == 0 {
		cfg.Port = dhcpv4.ServerPort
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	srv, err := server4.NewServer(cfg.Interface, &net.UDPAddr{IP: net.IPv4zero, Port: cfg.Port}, s.serve)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s: %w", cfg.Interface, err)
	}
	s.srv = srv
	return s, nil
}

// Run serves until ctx ends. Packets that do not parse are dropped by
// server4's loop; what the handler refuses is logged.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve() }()
	select {
	case <-ctx.Done():
		_ = s.srv.Close()
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("dhcp: %w", err)
	}
}

// serve answers one request, to the relay that forwarded it, or to the
// client (broadcast while it has no address: server4 sets peer so).
func (s *Server) serve(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
	resp, err := s.cfg.Handler.Handle(req)
	if err != nil {
		s.log.Info("dhcp: not answered", "mac", req.ClientHWAddr.String(), "type", req.MessageType().String(), "why", err)
	}
	if resp == nil {
		return
	}
	to := peer
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		to = &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	}
	if _, err := conn.WriteTo(resp.ToBytes(), to); err != nil {
		s.log.Warn("dhcp: answer not sent", "to", to, "err", err)
	}
}
