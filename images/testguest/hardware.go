package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// What a full distribution's udev and acpid do for a VM, done by the
// test guest's init: hot-added CPUs and memory are put online, and the
// ACPI power button powers the guest off cleanly. The VM tests use both:
// an edit that hot-adds hardware must reach the guest, and a graceful
// shutdown or reboot must be one the guest took part in.

// hardware is what the guest sees of its virtual hardware.
type hardware struct {
	CPUs      int      `json:"cpus"`       // online
	MemoryMiB int      `json:"memory_mib"` // MemTotal
	Disks     []string `json:"disks"`      // block devices, vda first
	NICs      []string `json:"nics"`       // network interfaces but lo
}

func readHardware() hardware {
	var hw hardware
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	for _, c := range cpus {
		b, err := os.ReadFile(filepath.Join(c, "online"))
		if err != nil || strings.TrimSpace(string(b)) == "1" { // cpu0 has no online file
			hw.CPUs++
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.Atoi(f[1])
				hw.MemoryMiB = kib / 1024
			}
		}
		f.Close()
	}
	blocks, _ := os.ReadDir("/sys/block")
	for _, b := range blocks {
		if strings.HasPrefix(b.Name(), "vd") {
			hw.Disks = append(hw.Disks, b.Name())
		}
	}
	nets, _ := os.ReadDir("/sys/class/net")
	for _, n := range nets {
		if n.Name() != "lo" {
			hw.NICs = append(hw.NICs, n.Name())
		}
	}
	slices.Sort(hw.Disks)
	slices.Sort(hw.NICs)
	return hw
}

func serveHardware(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(readHardware())
}

// onlineHotplugged puts hot-added CPUs and memory blocks online, every
// half second, for the guest's life.
func onlineHotplugged() {
	for {
		cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/online")
		for _, f := range cpus {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "0" {
				os.WriteFile(f, []byte("1"), 0o644)
			}
		}
		mems, _ := filepath.Glob("/sys/devices/system/memory/memory*/state")
		for _, f := range mems {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "offline" {
				os.WriteFile(f, []byte("online"), 0o644)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Linux input events (linux/input.h) as read from /dev/input/event*.
const (
	inputEventSize = 24 // struct timeval (16) + type, code (2 each) + value (4)
	evKey          = 1
	keyPower       = 116
)

// watchPowerButton powers the guest off when the ACPI power button is
// pressed, after flushing the counter's disk: it watches every input
// device, as the ACPI button driver's appears after its module loads.
func watchPowerButton(c *counter) {
	watching := map[string]bool{}
	watchInputs(c, watching)
	go func() {
		for {
			time.Sleep(time.Second)
			watchInputs(c, watching)
		}
	}()
}

// watchInputs starts watching the input devices not watched yet.
func watchInputs(c *counter, watching map[string]bool) {
	devs, _ := filepath.Glob("/dev/input/event*")
	for _, d := range devs {
		if watching[d] {
			continue
		}
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		watching[d] = true
		go func() {
			defer f.Close()
			ev := make([]byte, inputEventSize)
			for {
				if _, err := f.Read(ev); err != nil {
					return
				}
				typ, code := binary.LittleEndian.Uint16(ev[16:]), binary.LittleEndian.Uint16(ev[18:])
				value := int32(binary.LittleEndian.Uint32(ev[20:]))
				if typ == evKey && code == keyPower && value == 1 {
					powerOff(c)
				}
			}
		}()
	}
}

func powerOff(c *counter) {
	fmt.Printf("TESTGUEST POWER BUTTON count=%d: powering off\n", c.value())
	c.off.Store(true)
	c.mu.Lock() // no count after this line
	c.disk.Sync()
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
