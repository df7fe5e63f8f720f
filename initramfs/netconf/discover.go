package netconf

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tandemhci/tandem/board"
)

var pciAddrRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// Discover lists the physical network interfaces under sysClassNet (those
// with a device behind them), sorted by PCI path, with what the board's
// match rules look at.
func Discover(sysClassNet string) ([]board.Interface, error) {
	entries, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []board.Interface
	for _, e := range entries {
		dir := filepath.Join(sysClassNet, e.Name())
		dev, err := filepath.EvalSymlinks(filepath.Join(dir, "device"))
		if err != nil {
			continue // virtual: lo, bridges, taps
		}
		mac, _ := os.ReadFile(filepath.Join(dir, "address"))
		driver := ""
		if d, err := filepath.EvalSymlinks(filepath.Join(dev, "driver")); err == nil {
			driver = filepath.Base(d)
		}
		out = append(out, board.Interface{
			Name:    e.Name(),
			MAC:     strings.TrimSpace(string(mac)),
			Driver:  driver,
			PCIPath: PCIPath(dev),
		})
	}
	sortByPCIPath(out)
	return out, nil
}

// PCIPath returns the PCI address nearest the device in its sysfs path:
// virtio NICs sit one level below their PCI function (…/0000:00:03.0/virtio0).
func PCIPath(devPath string) string {
	parts := strings.Split(devPath, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if pciAddrRE.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return ""
}
