// Package statusapi is the supervisor's local status API: an HTTP API on a
// Unix socket that the other services, the console and the recovery shell
// read (services, states, restart counts, uptime, versions, boot problems)
// and that lets them restart a service or reboot the node.
//
// Only processes on the node reach it: the socket is root-only and never
// forwarded by the front door without authentication.
package statusapi

import "time"

// Socket is where the supervisor serves the API.
const Socket = "/run/tandem/supervisor.sock"

// Service states, as a service moves through them.
const (
	StateWaiting  = "waiting"  // for the services it needs to be running
	StateStarting = "starting" // process alive, not yet ready (see Service.ReadyDial)
	StateRunning  = "running"  // process alive and ready
	StateBackoff  = "backoff"  // exited or failed to start; restarts at NextStart
	StateStopping = "stopping" // SIGTERM sent, SIGKILL follows after the stop timeout
	StateStopped  = "stopped"  // stopped by an operator; stays down until started
	StateExited   = "exited"   // ended and its restart policy says not to restart
)

// Service is one supervised service.
type Service struct {
	Name      string     `json:"name"`
	State     string     `json:"state"`
	Critical  bool       `json:"critical"`
	PID       int        `json:"pid,omitempty"`
	Restarts  int        `json:"restarts"`
	Since     time.Time  `json:"since"` // when it entered State
	LastExit  string     `json:"last_exit,omitempty"`
	LastError string     `json:"last_error,omitempty"` // why the last start failed
	NextStart *time.Time `json:"next_start,omitempty"` // in backoff: when it is tried again
}

// Interface is a network interface the supervisor configured.
type Interface struct {
	Role      string   `json:"role"`
	Name      string   `json:"name"`
	MAC       string   `json:"mac"`
	Mode      string   `json:"mode"`
	Addresses []string `json:"addresses"`
}

// Node is the whole status of this node.
type Node struct {
	Name          string    `json:"name"`
	Board         string    `json:"board"`
	Version       string    `json:"version"`
	Slot          string    `json:"slot,omitempty"` // system slot booted from, a or b; empty for PXE
	BootedAt      time.Time `json:"booted_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	DataMounted   bool      `json:"data_mounted"` // persistent data partition mounted
	Watchdog      string    `json:"watchdog"`     // "off", "armed", "withheld: <reason>"
	// WatchdogTimeoutSeconds is the armed watchdog's timeout (0: none):
	// how long a node whose VMs outlive their fence lease keeps running.
	WatchdogTimeoutSeconds int         `json:"watchdog_timeout_seconds,omitempty"`
	Interfaces             []Interface `json:"interfaces"`
	Services               []Service   `json:"services"`
	// Problems found at boot or since: bad settings, a module that did not
	// load, no data partition. The node keeps running with them.
	Problems []string `json:"problems"`
}

// LogLine is one line of a service's output.
type LogLine struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// Actions on a service.
const (
	ActionStart   = "start"
	ActionStop    = "stop"
	ActionRestart = "restart"
)

// Power actions on the node.
const (
	PowerReboot   = "reboot"
	PowerPoweroff = "poweroff"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
