package installer

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/tandemhci/tandem/initramfs/netconf"
	"github.com/tandemhci/tandem/services/directory"
)

// Inventory reads the machine's hardware from /sys and /proc under root
// ("/" on the machine; a copy in tests): what the console shows an admin
// deciding whether to install it.
func Inventory(root string) directory.MachineInventory {
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b))
	}
	inv := directory.MachineInventory{
		Vendor:   read("sys/class/dmi/id/sys_vendor"),
		Product:  read("sys/class/dmi/id/product_name"),
		Serial:   read("sys/class/dmi/id/product_serial"),
		Firmware: "bios",
		Disks:    []directory.MachineDisk{},
		NICs:     []directory.MachineNIC{},
	}
	if st, err := os.Stat(filepath.Join(root, "sys/firmware/efi")); err == nil && st.IsDir() {
		inv.Firmware = "uefi"
	}
	inv.CPUModel, inv.CPUs = cpus(filepath.Join(root, "proc/cpuinfo"))
	inv.MemoryBytes = memTotal(filepath.Join(root, "proc/meminfo"))
	inv.Disks = Disks(filepath.Join(root, "sys/block"))
	if ifaces, err := netconf.Discover(filepath.Join(root, "sys/class/net")); err == nil {
		for _, i := range ifaces {
			speed, _ := strconv.Atoi(read(filepath.Join("sys/class/net", i.Name, "speed")))
			carrier := read(filepath.Join("sys/class/net", i.Name, "carrier"))
			inv.NICs = append(inv.NICs, directory.MachineNIC{
				Name: i.Name, MAC: i.MAC, Driver: i.Driver, PCIPath: i.PCIPath,
				Link: carrier == "1", SpeedMbps: max(speed, 0),
			})
		}
	}
	return inv
}

func cpus(path string) (model string, n int) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	return model, n
}

func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// Disks lists the machine's disks under sysBlock (/sys/block): those with
// a device behind them (not loop, RAM or device-mapper devices), by name.
func Disks(sysBlock string) []directory.MachineDisk {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil
	}
	var out []directory.MachineDisk
	for _, e := range entries {
		dir := filepath.Join(sysBlock, e.Name())
		dev, err := filepath.EvalSymlinks(filepath.Join(dir, "device"))
		if err != nil {
			continue
		}
		read := func(p string) string {
			b, _ := os.ReadFile(filepath.Join(dir, p))
			return strings.TrimSpace(string(b))
		}
		sectors, _ := strconv.ParseInt(read("size"), 10, 64)
		d := directory.MachineDisk{
			Name:      e.Name(),
			SizeBytes: sectors * 512, // sysfs counts 512-byte sectors whatever the disk's
			Model:     read("device/model"),
			Serial:    read("serial"),
			Removable: read("removable") == "1",
			PCIPath:   netconf.PCIPath(dev),
		}
		if d.Serial == "" {
			d.Serial = read("device/serial")
		}
		if drv, err := filepath.EvalSymlinks(filepath.Join(dev, "driver")); err == nil {
			d.Driver = filepath.Base(drv)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
