// Command testguest is the init of Tandem's test guest: a Debian kernel
// and this one static program, used by every VM test and by `make run`.
//
// It loads the virtio modules, sets the address the kernel command line
// gives (tandem.ip=ADDR/PREFIX, tandem.gw=GW), echoes TCP on port 7, and serves an HTTP counter
// on port 80 whose count lives on the first disk: every GET / adds one,
// writes it through to the disk and only then answers. GET /hw tells the
// hardware it sees (hardware.go), and the ACPI power button powers it off. A guest restarted
// on another node from the replicated disk counts on from where it was.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "testguest: %v\n", err)
	}
	// PID 1 must not exit: the kernel would panic.
	for {
		time.Sleep(time.Hour)
	}
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sys", "/sys", "sysfs"}, {"dev", "/dev", "devtmpfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	loadModules("/lib/modules")
	cmdline, _ := os.ReadFile("/proc/cmdline")
	args := map[string]string{}
	for _, f := range strings.Fields(string(cmdline)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "tandem.") {
			args[k] = v
		}
	}
	disk := args["tandem.disk"]
	if disk == "" {
		disk = "/dev/vda"
	}
	c, err := openCounter(disk)
	if err != nil {
		return err
	}
	if err := configureNetwork(args["tandem.ip"], args["tandem.gw"]); err != nil {
		return err
	}
	go onlineHotplugged()
	go serveEcho(":7")
	go c.tick()
	watchPowerButton(c) // before READY: a shutdown asked after it is heard
	fmt.Printf("TESTGUEST READY count=%d disk=%s ip=%s\n", c.value(), disk, args["tandem.ip"])
	go serveShell("/dev/ttyS0", c)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		n, err := c.add()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "count %d\n", n)
	})
	mux.HandleFunc("GET /peek", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "count %d\n", c.value())
	})
	mux.HandleFunc("GET /hw", serveHardware)
	return http.ListenAndServe(":80", mux)
}

// serveEcho answers every TCP connection with what it sends (RFC 862):
// the fault tolerance tests keep one open across a failover.
func serveEcho(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testguest: echo: %v\n", err)
		return
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// loadModules loads every module under dir in the order of their names
// (the image builder numbers them dependencies first), retrying any that
// failed in case a dependency came later.
func loadModules(dir string) {
	var mods []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			mods = append(mods, p)
		}
		return nil
	})
	for pass := 0; pass < 5 && len(mods) > 0; pass++ {
		var again []string
		for _, m := range mods {
			f, err := os.Open(m)
			if err != nil {
				continue
			}
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			if err != nil && !errors.Is(err, unix.EEXIST) {
				again = append(again, m)
			}
		}
		mods = again
	}
	for _, m := range mods {
		fmt.Fprintf(os.Stderr, "testguest: module %s did not load\n", filepath.Base(m))
	}
}

func configureNetwork(ip, gw string) error {
	if ip == "" {
		return errors.New("no tandem.ip on the kernel command line")
	}
	prefix, err := netip.ParsePrefix(ip)
	if err != nil {
		return fmt.Errorf("tandem.ip=%s: %w", ip, err)
	}
	var ifc *net.Interface
	for i := 0; i < 100 && ifc == nil; i++ {
		if x, err := net.InterfaceByName("eth0"); err == nil {
			ifc = x
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if ifc == nil {
		return errors.New("no eth0")
	}
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Announce the address when the link comes up (a gratuitous ARP), so
	// a guest restarted on the other node is found at once.
	os.WriteFile("/proc/sys/net/ipv4/conf/eth0/arp_notify", []byte("1"), 0o644)
	addr := prefix.Addr().AsSlice()
	if err := conn.Address.New(&rtnetlink.AddressMessage{
		Family: unix.AF_INET, PrefixLength: uint8(prefix.Bits()), Index: uint32(ifc.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: addr, Local: addr},
	}); err != nil {
		return fmt.Errorf("address %s: %w", prefix, err)
	}
	for _, idx := range []uint32{1, uint32(ifc.Index)} { // lo and eth0
		if err := conn.Link.Set(&rtnetlink.LinkMessage{Index: idx, Flags: unix.IFF_UP, Change: unix.IFF_UP}); err != nil {
			return fmt.Errorf("link up: %w", err)
		}
	}
	if gw != "" {
		g, err := netip.ParseAddr(gw)
		if err != nil {
			return fmt.Errorf("tandem.gw=%s: %w", gw, err)
		}
		if err := conn.Route.Add(&rtnetlink.RouteMessage{
			Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
			Attributes: rtnetlink.RouteAttributes{Gateway: g.AsSlice(), OutIface: uint32(ifc.Index)},
		}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
	}
	return nil
}

// counter is a number kept in the disk's first sector: "TGC1", the count
// (8 bytes) and a CRC32 of both; a zeroed or torn sector counts from 0.
type counter struct {
	mu   sync.Mutex
	disk *os.File
	n    uint64
	off  atomic.Bool // powering off: the ticker stops
}

var magic = []byte("TGC1")

func openCounter(path string) (*counter, error) {
	var f *os.File
	var err error
	for i := 0; i < 100; i++ { // the disk's driver may still be probing
		if f, err = os.OpenFile(path, os.O_RDWR|unix.O_DIRECT|unix.O_SYNC, 0); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("open the counter's disk: %w", err)
	}
	c := &counter{disk: f}
	sector := alignedSector()
	if _, err := f.ReadAt(sector, 0); err != nil {
		return nil, fmt.Errorf("read the count: %w", err)
	}
	if bytes.Equal(sector[:4], magic) && crc32.ChecksumIEEE(sector[:12]) == binary.BigEndian.Uint32(sector[12:16]) {
		c.n = binary.BigEndian.Uint64(sector[4:12])
	}
	return c, nil
}

// alignedSector is a 4 KiB buffer aligned for O_DIRECT.
func alignedSector() []byte {
	buf := make([]byte, 8192)
	off := int(uintptr(unsafe.Pointer(&buf[0])) & 4095)
	if off != 0 {
		off = 4096 - off
	}
	return buf[off : off+4096]
}

func (c *counter) value() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// tick writes a sequence number to the disk's second block ten times a
// second, for the guest's life: a guest that runs writes its disk even
// when nobody asks its counter, which is what the HA tests look for on a
// node cut off from the cluster (its copy must stop changing before the
// other node starts the VM).
func (c *counter) tick() {
	block := alignedSector()
	for seq := uint64(1); ; seq++ {
		time.Sleep(100 * time.Millisecond)
		copy(block, "TGT1")
		binary.BigEndian.PutUint64(block[4:12], seq)
		// Not under c.mu: a slow write of its own block must not hold up
		// the counter's.
		if c.off.Load() {
			return
		}
		if _, err := c.disk.WriteAt(block, 4096); err != nil {
			fmt.Fprintf(os.Stderr, "testguest: tick %d: %v\n", seq, err)
		}
	}
}

// add counts one and returns once the new count is on the disk.
func (c *counter) add() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sector := alignedSector()
	copy(sector, magic)
	binary.BigEndian.PutUint64(sector[4:12], c.n+1)
	binary.BigEndian.PutUint32(sector[12:16], crc32.ChecksumIEEE(sector[:12]))
	if _, err := c.disk.WriteAt(sector, 0); err != nil {
		return c.n, fmt.Errorf("write the count: %w", err)
	}
	c.n++
	return c.n, nil
}
