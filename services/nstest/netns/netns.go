// Package netns handles Linux network namespaces by name, as iproute2's
// `ip netns` makes them: create and delete them (killing what runs in
// them, by PID), and dial from inside one. Test hosts (nstest) and the
// virtual box (images/qemubox) are built on it. It needs root.
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Add makes a namespace with its loopback up.
func Add(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("loopback up in %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// PIDs lists the processes in a namespace, this one excepted (it is listed
// while one of its threads is inside).
func PIDs(name string) []int {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Delete kills every process left in the namespace (any of them keeps it
// alive) and removes it.
func Delete(name string) error {
	for _, pid := range PIDs(name) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Exists reports whether the namespace is there.
func Exists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// Command returns a command that runs in the namespace. `ip netns exec`
// execs the program, so the command's PID is the program's.
func Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
}

// Dial dials from inside the namespace: the socket is made on an OS thread
// that joined the namespace (and that is thrown away afterwards), so a
// process in the host namespace can be a client on the namespace's
// network.
func Dial(ctx context.Context, name, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(name, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace; the listener keeps working from any
// thread once made.
func Listen(name, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(name, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Do runs f on a thread inside the namespace: what f makes there (a
// socket) stays in it. The thread stays locked and
// ends with its goroutine: it is in another namespace now and must never
// run other goroutines.
func Do(name string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := os.Open("/run/netns/" + name)
		if err != nil {
			ch <- err
			return
		}
		defer h.Close()
		if err := unix.Setns(int(h.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}
