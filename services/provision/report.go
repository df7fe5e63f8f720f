package provision

import (
	"context"
	"log/slog"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/dhcp"
)

// pxeReporter tells the cluster of the network boots the DHCP server
// answered or refused, once per machine and answer (a client repeats
// itself: DISCOVER, REQUEST, and its firmware, then iPXE): the
// machine's pxe step in the directory.
type pxeReporter struct {
	cluster *cluster.LocalClient
	log     *slog.Logger
	heardCh chan cluster.PXEReport
}

// pxeRepeat is how long the same answer to the same machine is not
// reported again.
const pxeRepeat = time.Minute

func newPXEReporter(c *cluster.LocalClient, log *slog.Logger) *pxeReporter {
	return &pxeReporter{cluster: c, log: log, heardCh: make(chan cluster.PXEReport, 64)}
}

// heard is the DHCP handler's OnBoot: it never blocks the server.
func (p *pxeReporter) heard(mac string, boot dhcp.Boot, err error) {
	r := cluster.PXEReport{MAC: mac, Firmware: boot.Arch}
	switch {
	case err != nil:
		r.Error = err.Error()
	case boot.Firmware == dhcp.FirmwareIPXE:
		r.Output = "iPXE: script " + boot.File
	default:
		r.Output = boot.Firmware + " PXE ROM: iPXE loader " + boot.File + " by TFTP"
	}
	select {
	case p.heardCh <- r:
	default:
		p.log.Warn("PXE report dropped: the cluster agent is slow", "mac", mac)
	}
}

func (p *pxeReporter) run(ctx context.Context) {
	sent := map[cluster.PXEReport]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.heardCh:
			if t, ok := sent[r]; ok && time.Since(t) < pxeRepeat {
				continue
			}
			for k, t := range sent {
				if time.Since(t) >= pxeRepeat {
					delete(sent, k)
				}
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := p.cluster.PXE(rctx, r)
			cancel()
			if err != nil {
				p.log.Warn("PXE boot not recorded in the directory", "mac", r.MAC, "err", err)
				continue
			}
			sent[r] = time.Now()
			p.log.Info("network boot", "mac", r.MAC, "firmware", r.Firmware, "answer", r.Output, "error", r.Error)
		}
	}
}
