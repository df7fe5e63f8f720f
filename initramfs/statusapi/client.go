package statusapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// Client talks to the supervisor's status API.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the API on the given socket.
func NewClient(socket string) *Client {
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Node returns the node's status.
func (c *Client) Node(ctx context.Context) (Node, error) {
	var n Node
	err := c.do(ctx, http.MethodGet, "/v1/node", &n)
	return n, err
}

// ServiceLog returns up to lines of a service's last output lines (0: all kept).
func (c *Client) ServiceLog(ctx context.Context, service string, lines int) ([]LogLine, error) {
	var out []LogLine
	err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(service)+"/log?lines="+strconv.Itoa(lines), &out)
	return out, err
}

// Control starts, stops or restarts a service.
func (c *Client) Control(ctx context.Context, service, action string) error {
	return c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(service)+"/"+url.PathEscape(action), nil)
}

// Power reboots or powers off the node.
func (c *Client) Power(ctx context.Context, action string) error {
	return c.do(ctx, http.MethodPost, "/v1/power/"+url.PathEscape(action), nil)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://supervisor"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("supervisor status API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("supervisor status API: %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("supervisor: %s", e.Error)
		}
		return fmt.Errorf("supervisor status API: %s: %s", path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("supervisor status API: %s: %w", path, err)
	}
	return nil
}
