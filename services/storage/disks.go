package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/replica"
)

// Disk health comes from two places: the kernel's per-device counters
// (/sys/block/<dev>/stat), which give every disk's mean I/O wait over the
// last interval whatever the disk is, and SMART through smartctl where
// the disk and the image offer it. A disk whose wait stays high is
// reported slow: it drags every replicated write down with it.

// DiskHealth is one disk's report.
type DiskHealth struct {
	Device      string  `json:"device"`
	SizeBytes   int64   `json:"size_bytes"`
	Rotational  bool    `json:"rotational"`
	IOPS        float64 `json:"iops"`
	AwaitMillis float64 `json:"await_ms"` // mean time per completed I/O over the last interval
	Slow        bool    `json:"slow"`
	SMART       *SMART  `json:"smart,omitempty"`
	SMARTError  string  `json:"smart_error,omitempty"`
}

// SMART is the part of smartctl's answer the console shows.
type SMART struct {
	Passed            bool  `json:"passed"`
	TemperatureC      int   `json:"temperature_c,omitempty"`
	PowerOnHours      int   `json:"power_on_hours,omitempty"`
	ReallocatedSector int64 `json:"reallocated_sectors,omitempty"`
}

// DisksReport is the node's disk health, with the volumes' latencies.
type DisksReport struct {
	Disks   []DiskHealth             `json:"disks"`
	Volumes map[string]VolumeLatency `json:"volumes"`
	Slow    []string                 `json:"slow,omitempty"` // what is slow, in words
}

// VolumeLatency is a volume's read and write latency on this node.
type VolumeLatency struct {
	Reads  replica.Latency `json:"reads"`
	Writes replica.Latency `json:"writes"`
}

type diskSample struct {
	at      time.Time
	ios     uint64 // reads + writes completed
	ticksMs uint64 // ms spent on them
}

type diskMonitor struct {
	slow     time.Duration
	sysBlock string

	mu    sync.Mutex
	last  map[string]diskSample
	stats map[string][2]float64 // iops, await ms
}

func newDiskMonitor(slow time.Duration) *diskMonitor {
	return &diskMonitor{slow: slow, sysBlock: "/sys/block", last: map[string]diskSample{}, stats: map[string][2]float64{}}
}

// skipDevice leaves out what is not a disk.
func skipDevice(name string) bool {
	for _, p := range []string{"loop", "ram", "nbd", "dm-", "zram", "sr", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (m *diskMonitor) run(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		m.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// parseStat reads the completed I/Os and the time spent on them from a
// /sys/block/<dev>/stat line.
func parseStat(line string) (ios, ticks uint64, err error) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return 0, 0, fmt.Errorf("block stat: %d fields, want at least 8", len(f))
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("block stat field %d: %w", i, err)
		}
	}
	// reads, reads merged, sectors read, ms reading, writes, merged, sectors, ms writing
	return v[0] + v[4], v[3] + v[7], nil
}

func (m *diskMonitor) sample() {
	entries, _ := os.ReadDir(m.sysBlock)
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		if skipDevice(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.sysBlock, e.Name(), "stat"))
		if err != nil {
			continue
		}
		ios, ticks, err := parseStat(string(b))
		if err != nil {
			continue
		}
		cur := diskSample{at: now, ios: ios, ticksMs: ticks}
		if prev, ok := m.last[e.Name()]; ok && cur.ios >= prev.ios && cur.ticksMs >= prev.ticksMs {
			d := cur.ios - prev.ios
			var await float64
			if d > 0 {
				await = float64(cur.ticksMs-prev.ticksMs) / float64(d)
			}
			m.stats[e.Name()] = [2]float64{float64(d) / now.Sub(prev.at).Seconds(), await}
		}
		m.last[e.Name()] = cur
	}
}

func (m *diskMonitor) report(ctx context.Context, vols map[string]VolumeLatency) DisksReport {
	rep := DisksReport{Disks: []DiskHealth{}, Volumes: vols}
	entries, _ := os.ReadDir(m.sysBlock)
	for _, e := range entries {
		if skipDevice(e.Name()) {
			continue
		}
		d := DiskHealth{Device: e.Name()}
		if b, err := os.ReadFile(filepath.Join(m.sysBlock, e.Name(), "size")); err == nil {
			sectors, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			d.SizeBytes = sectors * 512
		}
		if b, err := os.ReadFile(filepath.Join(m.sysBlock, e.Name(), "queue", "rotational")); err == nil {
			d.Rotational = strings.TrimSpace(string(b)) == "1"
		}
		m.mu.Lock()
		st, ok := m.stats[e.Name()]
		m.mu.Unlock()
		if ok {
			d.IOPS, d.AwaitMillis = st[0], st[1]
			if d.AwaitMillis > float64(m.slow.Milliseconds()) {
				d.Slow = true
				rep.Slow = append(rep.Slow, fmt.Sprintf("disk %s: %.0f ms per I/O", d.Device, d.AwaitMillis))
			}
		}
		d.SMART, d.SMARTError = smart(ctx, "/dev/"+e.Name())
		rep.Disks = append(rep.Disks, d)
	}
	for name, l := range vols {
		limit := 4 * m.slow.Microseconds()
		if l.Writes.P99us > limit || l.Reads.P99us > limit {
			rep.Slow = append(rep.Slow, fmt.Sprintf("volume %s: p99 read %d µs, write %d µs", name, l.Reads.P99us, l.Writes.P99us))
		}
	}
	return rep
}

// smart asks smartctl, when the image has it, for the disk's health.
func smart(ctx context.Context, dev string) (*SMART, string) {
	path, err := exec.LookPath("smartctl")
	if err != nil {
		return nil, "smartctl is not installed on this node"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// smartctl's exit status is a bit mask of findings; the JSON is what
	// counts.
	out, _ := exec.CommandContext(ctx, path, "-j", "-H", "-A", dev).Output()
	return parseSmartctl(out)
}

func parseSmartctl(out []byte) (*SMART, string) {
	var j struct {
		Smartctl struct {
			Messages []struct {
				String string `json:"string"`
			} `json:"messages"`
		} `json:"smartctl"`
		Status *struct {
			Passed bool `json:"passed"`
		} `json:"smart_status"`
		Temperature struct {
			Current int `json:"current"`
		} `json:"temperature"`
		PowerOn struct {
			Hours int `json:"hours"`
		} `json:"power_on_time"`
		Attrs struct {
			Table []struct {
				ID  int `json:"id"`
				Raw struct {
					Value int64 `json:"value"`
				} `json:"raw"`
			} `json:"table"`
		} `json:"ata_smart_attributes"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return nil, "smartctl answered no JSON"
	}
	if j.Status == nil {
		msg := "the disk offers no SMART data"
		if len(j.Smartctl.Messages) > 0 {
			msg = j.Smartctl.Messages[0].String
		}
		return nil, msg
	}
	s := &SMART{Passed: j.Status.Passed, TemperatureC: j.Temperature.Current, PowerOnHours: j.PowerOn.Hours}
	for _, a := range j.Attrs.Table {
		if a.ID == 5 {
			s.ReallocatedSector = a.Raw.Value
		}
	}
	return s, ""
}

// latencies gathers the volumes' latency percentiles on this node.
func (s *Service) latencies() map[string]VolumeLatency {
	out := map[string]VolumeLatency{}
	for _, n := range s.names() {
		if c := s.copyOf(n); c != nil {
			st := c.status()
			out[n] = VolumeLatency{Reads: st.Replica.Reads, Writes: st.Replica.Writes}
		}
	}
	return out
}
