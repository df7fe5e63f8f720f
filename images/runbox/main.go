// Command runbox boots the virtual Tandem box for `make run`: the two
// nodes of the qemu-2node board from images/out, each with its own system
// disk (kept in the work directory between runs), and prints where each
// node's console answers on localhost. Ctrl-C stops every QEMU it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/qemubox"
)

func main() {
	images := flag.String("images", "images/out", "directory of the built image")
	work := flag.String("work", "images/out/run", "where the nodes' disks and console logs live")
	boardName := flag.String("board", "qemu-2node", "board of the virtual box")
	fresh := flag.Bool("fresh", false, "discard the nodes' disks from earlier runs (first boot again)")
	flag.Parse()
	if err := run(*images, *work, *boardName, *fresh); err != nil {
		fmt.Fprintln(os.Stderr, "runbox:", err)
		os.Exit(1)
	}
}

func run(images, work, boardName string, fresh bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b, err := board.LoadNamed(".", boardName)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
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
	fmt.Printf("accelerator: %v; booting %d nodes (consoles logged under %s)\n", qemubox.Accel()[1], len(box.Nodes), work)

	var wg sync.WaitGroup
	for _, n := range box.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			h, err := n.WaitHealthy(ctx, 5*time.Minute)
			if err != nil {
				fmt.Printf("%s: not healthy: %v (console log: %s)\n", n.Name, err, n.ConsoleLog)
				return
			}
			fmt.Printf("%s: console %s  (health %s/api/v1/health; %s, up in %.1fs)\n",
				n.Name, n.URL(), n.URL(), h.Version, time.Since(start).Seconds())
			fmt.Printf("%s: serial console log: tail -f %s\n", n.Name, n.ConsoleLog)
		}()
	}
	wg.Wait()
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
