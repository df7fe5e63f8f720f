// Command runbox boots the virtual Tandem box for `make run`: the two
// nodes of the qemu-2node board from images/out on a site network of
// their own, each with its own system disk (kept in the work directory
// between runs), forms the cluster on first boot (bootstrap on node-a,
// node-b joins over the interconnect), runs the witness on the site host,
// and prints where the console answers on localhost. Ctrl-C stops every
// process it started.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/qemubox"
)

func main() {
	images := flag.String("images", "images/out", "directory of the built image")
	work := flag.String("work", "images/out/run", "where the nodes' disks, the witness and the console logs live")
	boardName := flag.String("board", "qemu-2node", "board of the virtual box")
	witness := flag.String("witness", "images/out/tandem-witness", "the witness binary, run on the site host")
	fresh := flag.Bool("fresh", false, "discard the nodes' disks and the cluster from earlier runs (first boot again)")
	flag.Parse()
	if err := run(*images, *work, *boardName, *witness, *fresh); err != nil {
		fmt.Fprintln(os.Stderr, "runbox:", err)
		os.Exit(1)
	}
}

func run(images, work, boardName, witnessBin string, fresh bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b, err := board.LoadNamed(".", boardName)
	if err != nil {
		return err
	}
	if witnessBin, err = filepath.Abs(witnessBin); err != nil {
		return err
	}
	credsFile := filepath.Join(work, "cluster.json")
	witnessDir := filepath.Join(work, "witness")
	if fresh {
		_ = os.Remove(credsFile)
		_ = os.RemoveAll(witnessDir)
	}
	var creds qemubox.Credentials
	formed := readJSON(credsFile, &creds) == nil
	if !formed {
		// A cluster half-made by an interrupted run cannot be resumed
		// without its credentials: start the box from blank disks.
		fresh = true
		_ = os.RemoveAll(witnessDir)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	box, err := qemubox.Start(ctx, qemubox.Config{
		ImageDir: images, Board: b, WorkDir: work, Logger: log,
		Nodes: []qemubox.NodeConfig{
			{Name: "node-a", FreshDisk: fresh},
			{Name: "node-b", FreshDisk: fresh},
		},
	})
	if err != nil {
		return err
	}
	defer box.Stop()
	fmt.Printf("accelerator: %s; booting %d nodes on site network %s (consoles logged under %s)\n",
		box.Accel.Name(), len(box.Nodes), qemubox.LANPrefix+"0/24", work)

	var wg sync.WaitGroup
	healthy := make([]bool, len(box.Nodes))
	for i, n := range box.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			h, err := n.WaitHealthy(ctx, 5*time.Minute)
			if err != nil {
				fmt.Printf("%s: not healthy: %v (console log: %s)\n", n.Name, err, n.ConsoleLog)
				return
			}
			healthy[i] = true
			fmt.Printf("%s: up in %.1fs (%s), %s, serial console log: %s\n", n.Name, time.Since(start).Seconds(), h.Version, n.IP, n.ConsoleLog)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	for _, ok := range healthy {
		if !ok {
			return errors.New("a node did not come up")
		}
	}

	if !formed {
		fmt.Println("forming the cluster: bootstrap on node-a, node-b joins over the interconnect")
		creds, err = box.FormCluster(ctx, "admin", newPassword())
		if err != nil {
			return err
		}
		if err := writeJSON(credsFile, creds); err != nil {
			return err
		}
	}
	w, err := box.StartWitness(witnessBin, witnessDir, creds.JoinToken, "-heartbeat", "1s", "-lease", "500ms")
	if err != nil {
		return err
	}
	defer w.Stop()
	if _, err := box.WaitClusterHealthy(ctx, creds, 3*time.Minute); err != nil {
		fmt.Printf("warning: %v (witness log: %s)\n", err, w.Log)
	}

	guest, err := box.CreateTestGuest(ctx, creds, "testguest", box.Nodes[0].Name)
	if err != nil {
		fmt.Printf("warning: the test guest was not created: %v\n", err)
	}

	fmt.Println()
	fmt.Printf("Tandem console: %s  (cluster IP %s)\n", box.ClusterURL(), qemubox.ClusterIP)
	for _, n := range box.Nodes {
		fmt.Printf("  %s: %s  (health %s/api/v1/health)\n", n.Name, n.URL(), n.URL())
	}
	fmt.Printf("  witness: %s on the site network, log %s\n", qemubox.HostIP, w.Log)
	fmt.Printf("  sign in as %s / %s  (kept in %s)\n", creds.Admin, creds.Password, credsFile)
	if err == nil {
		fmt.Printf("  test guest %q (HA VM, counter on its replicated disk): ip netns exec %s curl http://%s/\n", guest.Name, box.Namespace(), qemubox.TestGuestIP)
		fmt.Printf("    kill the node running it (pkill -f 'qemu-system-x86_64 -name node-a'; see %s/api/v1/vms) and it answers again from the other node\n", box.ClusterURL())
	}
	fmt.Println("the box is running; Ctrl-C stops it")

	exited := make(chan string, len(box.Nodes))
	for _, n := range box.Nodes {
		go func() {
			<-n.Exited()
			exited <- n.Name
		}()
	}
	for remaining := len(box.Nodes); remaining > 0; {
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping the box")
			return nil
		case name := <-exited:
			remaining--
			fmt.Printf("%s: QEMU exited\n", name)
		}
	}
	return nil
}

// newPassword makes the first admin's password for the box.
func newPassword() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
