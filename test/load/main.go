// Command load is a bounded load run of berth against a real upstream: a
// distribution registry (in process, on loopback) behind one berth process,
// with clients mixing pulls that hit and miss, Range requests, requests
// without the credentials a private registry needs, and unknown digests.
// It checks every byte against its digest and every error against what it
// must be, samples berth's RSS and open fds, and exits non-zero on a wrong
// byte, a 5xx, or an answer it did not expect. Not part of go test:
//
//	go run ./test/load -clients 500 -duration 60s
//	go run ./test/load -clients 20 -duration 5s   # a smoke run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

func main() {
	var o options
	flag.IntVar(&o.clients, "clients", 500, "concurrent clients")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "length of the run (the whole command is bounded by it plus set-up)")
	flag.IntVar(&o.images, "images", 60, "images in the upstream (each pulled cold once, then hit)")
	flag.IntVar(&o.layers, "layers", 3, "layers per image")
	flag.Int64Var(&o.maxLayer, "max-layer", 1<<20, "largest layer in bytes (sizes are random up to it)")
	flag.StringVar(&o.berth, "berth", "", "berth binary (default: build ./cmd/berth)")
	flag.StringVar(&o.work, "work", "", "work directory (default: a temporary one, removed after)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+10*time.Minute)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	clients, images, layers int
	maxLayer                int64
	duration                time.Duration
	berth, work             string
}

func run(ctx context.Context, o options) error {
	if o.work == "" {
		dir, err := os.MkdirTemp("", "berth-load")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.work = dir
	}
	if o.berth == "" {
		o.berth = filepath.Join(o.work, "berth")
		fmt.Println("load: building berth")
		bin, err := proctest.BuildBerth(ctx, o.work, false)
		if err != nil {
			return err
		}
		o.berth = bin
	}
	up := upstreamtest.Start(filepath.Join(o.work, "upstream"))
	defer up.Close()
	fmt.Printf("load: pushing %d images of %d layers (up to %d bytes) to %s\n", o.images, o.layers, o.maxLayer, up.Host)
	imgs, err := pushImages(ctx, up.Host, o.images, o.layers, o.maxLayer)
	if err != nil {
		return err
	}
	b, err := startBerth(o.berth, filepath.Join(o.work, "berth-node"), up)
	if err != nil {
		return err
	}
	defer b.stop()
	fmt.Printf("load: %d clients for %s against berth %s (pid %d)\n", o.clients, o.duration, b.URL, b.Cmd.Process.Pid)
	res := drive(ctx, b, up, imgs, o.clients, o.duration)
	res.print(os.Stdout)
	if why := res.failures(); len(why) > 0 {
		return fmt.Errorf("%s", strings.Join(why, "; "))
	}
	return nil
}
