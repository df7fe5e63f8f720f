package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogger sends raft's logging (hclog) to slog, so the agent writes one
// format. Raft's chatty info lines go out at debug level except leadership
// and membership changes, which an operator wants to see.
type hclogger struct {
	l    *slog.Logger
	name string
	args []any
}

func newHCLogger(l *slog.Logger) hclog.Logger { return &hclogger{l: l, name: "raft"} }

func (h *hclogger) Log(level hclog.Level, msg string, args ...any) {
	var lv slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		lv = slog.LevelDebug
	case hclog.Info:
		lv = slog.LevelInfo
	case hclog.Warn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelError
	}
	h.l.Log(context.Background(), lv, msg, append(append([]any{"component", h.name}, h.args...), args...)...)
}

func (h *hclogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogger) IsTrace() bool                 { return false }
func (h *hclogger) IsDebug() bool                 { return h.l.Enabled(context.Background(), slog.LevelDebug) }
func (h *hclogger) IsInfo() bool                  { return true }
func (h *hclogger) IsWarn() bool                  { return true }
func (h *hclogger) IsError() bool                 { return true }
func (h *hclogger) ImpliedArgs() []any            { return h.args }
func (h *hclogger) With(args ...any) hclog.Logger {
	return &hclogger{l: h.l, name: h.name, args: append(append([]any(nil), h.args...), args...)}
}
func (h *hclogger) Name() string { return h.name }
func (h *hclogger) Named(name string) hclog.Logger {
	return &hclogger{l: h.l, name: h.name + "." + name, args: h.args}
}
func (h *hclogger) ResetNamed(name string) hclog.Logger {
	return &hclogger{l: h.l, name: name, args: h.args}
}
func (h *hclogger) SetLevel(hclog.Level)  {}
func (h *hclogger) GetLevel() hclog.Level { return hclog.Info }
func (h *hclogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.l.Handler(), slog.LevelInfo)
}
func (h *hclogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return log.Writer()
}
