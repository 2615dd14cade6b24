//go:build bench

package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// containerdConfig and containerd2Config keep a containerd of the bench's
// own under one directory, as test/e2e's do (test/proctest): 1.6's with
// the CRI plugin off, 2.x's with the transfer service's parallel Range fetch.
var containerdConfig, containerd2Config = proctest.Containerd16Config, proctest.Containerd2Config

// ctrdKind is one containerd under test: the table row, its binaries and config.
type ctrdKind struct {
	id, label        string // label: said after the version
	bin, ctr, config string
	up               *counter // the upstream it pulls from (direct, and through the mirrors)
	wan              wan      // what that upstream adds (zero: plain loopback)
}

// ctrd is a running containerd with an empty content store.
type ctrd struct {
	p         *proc
	dir, sock string
}

// startContainerd starts a fresh containerd and waits until ctr reaches it.
func startContainerd(ctx context.Context, k ctrdKind) (*ctrd, error) {
	dir, err := os.MkdirTemp("", "bctrd") // short: a unix socket path has at most 108 bytes
	if err != nil {
		return nil, err
	}
	c := &ctrd{dir: dir, sock: filepath.Join(dir, "c.sock")}
	file := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(k.config, "{{dir}}", dir)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.p, err = startProc("containerd", dir, nil, k.bin, "--config", file)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := runCmd(ctx, 10*time.Second, k.ctr, "--address", c.sock, "version")
		if err == nil {
			return c, nil
		}
		exited := false
		select {
		case <-c.p.Done():
			exited = true
			err = fmt.Errorf("containerd exited; see %s", c.p.Log)
		default:
		}
		if exited || time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			return nil, fmt.Errorf("containerd not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // polling another process's socket
	}
}

func (c *ctrd) stop() {
	c.p.stop(10 * time.Second)
	os.RemoveAll(c.dir)
}

// hostsDir writes dir/<registry>/hosts.toml: through mirror (host:port,
// plain HTTP) with the fallback server a dead loopback port, or straight
// to the registry when mirror is "".
func hostsDir(dir, registry, mirror string) error {
	d := filepath.Join(dir, registry)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	toml := fmt.Sprintf("server = %q\n", "http://"+registry)
	if mirror != "" {
		toml = fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+freeAddr(), "http://"+mirror)
	}
	return os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644)
}

// benchContainerd: a fresh containerd pulls (and unpacks) a cold image
// of o.layers layers with `ctr images pull --hosts-dir`: straight from the
// upstream, through a fresh berth, through a fresh distribution proxy, in
// every round. Through a mirror the fallback server is a dead port, so a
// pull that succeeds came through the mirror.
func benchContainerd(ctx context.Context, e *env, o *opts, rep *report, data, upAddr string, k ctrdKind) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("containerd needs root (run the suite as root, or leave out -figures %s)", k.id)
	}
	version := "?"
	if v, err := runCmd(ctx, time.Minute, k.bin, "--version"); err == nil {
		if f := strings.Fields(v); len(f) >= 3 {
			version = strings.TrimSuffix(f[2], "+unknown")
		}
	}
	if !strings.Contains(rep.Machine.Containerd, "containerd "+version) { // the -wan rows run the same ones again
		rep.Machine.Containerd = strings.TrimPrefix(rep.Machine.Containerd+", ", ", ") + "containerd " + version
	}
	if e.ctrImg == nil {
		t0 := time.Now()
		img, err := makeTarImage(ctx, data, upAddr, "bench/ctr", o.layers, int64(o.layerMiB)*MiB, 5)
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s: %d x %d MiB tar layers in %.1fs\n", img.Repo, o.layers, o.layerMiB, time.Since(t0).Seconds())
		e.ctrImg = img
	}
	img := e.ctrImg
	up := k.up
	ref := up.Addr + "/" + img.Repo + ":" + img.Tag
	var berthCPU []float64
	pathCPU := map[string][]float64{} // every process's on the pull's path
	pull := func(name, mirror string, r int, p *proc) (float64, int64, error) {
		c, err := startContainerd(ctx, k)
		if err != nil {
			return 0, 0, err
		}
		defer c.stop()
		hosts := filepath.Join(c.dir, "hosts")
		if err := hostsDir(hosts, up.Addr, mirror); err != nil {
			return 0, 0, err
		}
		up.reset()
		// CPU seconds each process spends on the pull: on 2 cores a pull
		// that keeps both busy is as slow as the CPU it needs in all.
		cpus := func() [5]float64 {
			var v [5]float64
			_, v[0] = c.p.status()
			if p != nil {
				_, v[1] = p.status()
			}
			_, v[2] = e.upProc.status()
			_, v[3] = pidStatus(os.Getpid()) // the counting proxy, mostly
			var ru syscall.Rusage            // children waited for: ctr (containerd 1.6's ctr fetches the layers itself)
			if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
				v[4] = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
			}
			return v
		}
		cpu0 := cpus()
		t0 := time.Now()
		_, err = runCmd(ctx, 20*time.Minute, k.ctr, "--address", c.sock, "images", "pull", "--hosts-dir", hosts, ref)
		dt := time.Since(t0).Seconds()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		cpu1 := cpus()
		for i := range cpu1 {
			cpu1[i] -= cpu0[i]
		}
		cpuLine := fmt.Sprintf("CPU s: containerd %.2f, ctr %.2f, %s %.2f, upstream registry %.2f, bench (counting proxy) %.2f", cpu1[0], cpu1[4], name, cpu1[1], cpu1[2], cpu1[3])
		fmt.Printf("%s round %d, %s: %.2fs; %s\n", k.id, r, name, dt, cpuLine)
		if name == berthName {
			berthCPU = append(berthCPU, cpu1[1])
		}
		pathCPU[name] = append(pathCPU[name], cpu1[0]+cpu1[1]+cpu1[2]+cpu1[3]+cpu1[4])
		if e.timeline != "" {
			log := ""
			file := filepath.Join(e.timeline, fmt.Sprintf("%s-%d-%s.txt", k.id, r, strings.Fields(name)[0]))
			if name == berthName {
				log = p.Log
				if b, err := os.ReadFile(log); err == nil {
					os.WriteFile(strings.TrimSuffix(file, ".txt")+".log", b, 0o644)
				}
			}
			if err := writeTimeline(file, t0, img, up.taken(), log, fmt.Sprintf("pull %.3f s; %s", dt, cpuLine)); err != nil {
				return 0, 0, err
			}
		}
		out, err := runCmd(ctx, time.Minute, k.ctr, "--address", c.sock, "images", "check")
		if err != nil || !strings.Contains(out, "complete") {
			return 0, 0, fmt.Errorf("%s: ctr images check: %v\n%s", name, err, out)
		}
		return dt, up.blobGets.Load(), nil
	}
	times := map[string][]float64{}
	var gets []float64
	for r := range o.rounds {
		dt, _, err := pull("direct", "", r, nil)
		if err != nil {
			return err
		}
		times["direct"] = append(times["direct"], dt)
		for _, name := range []string{berthName, proxyName} {
			dir := filepath.Join(e.work, fmt.Sprintf("ctr-%d-%s", r, name[:4]))
			p, addr, err := startServerOf(ctx, e, name, dir, up.Addr)
			if err != nil {
				return err
			}
			dt, g, err := pull(name, addr, r, p)
			p.stop(10 * time.Second)
			os.RemoveAll(dir)
			if err != nil {
				return err
			}
			times[name] = append(times[name], dt)
			if name == berthName {
				gets = append(gets, float64(g))
			}
			fmt.Printf("%s round %d: direct %.2fs, %s %.2fs (%d upstream blob GETs)\n", k.id, r, times["direct"][r], name, dt, g)
		}
	}
	b, p, d := median(times[berthName]), median(times[proxyName]), median(times["direct"])
	// The row says which upstream: the chart's label and ratio line are
	// short (they must fit 390 px), the figure and JSON say it in full.
	upstream, where, short := "loopback, no added latency or bandwidth limit", "loopback upstream", "upstream on loopback, no RTT or cap"
	if k.wan != (wan{}) {
		upstream, where = k.wan.String(), "WAN-like upstream"
		short = fmt.Sprintf("upstream %g ms RTT, %g MB/s per conn.", float64(k.wan.RTT)/float64(time.Millisecond), k.wan.ConnMBps)
	}
	for name, c := range pathCPU {
		times[name+" CPU s, all processes"] = c
	}
	// On cores the direct pull keeps this busy, a pull that needs more
	// CPU in all takes about that much longer: the CPU ratio is what the
	// wall ratio follows when the machine, not the mirror, is the limit.
	fmt.Printf("%s: all processes' CPU per pull, medians: direct %.2f s, berth %.2f s (%.2f×), proxy %.2f s (%.2f×); wall ratio berth %.2f, proxy %.2f\n", k.id,
		median(pathCPU["direct"]), median(pathCPU[berthName]), median(pathCPU[berthName])/median(pathCPU["direct"]),
		median(pathCPU[proxyName]), median(pathCPU[proxyName])/median(pathCPU["direct"]), b/d, p/d)
	rep.add(&row{
		ID: k.id, Label: fmt.Sprintf("containerd %s pull, %s", version, where),
		Figure:   fmt.Sprintf("containerd %s%s pull (ctr, unpacked) of a cold %d-layer %d MiB image, upstream %s: time ÷ direct pull", version, k.label, o.layers, img.Bytes/MiB, upstream),
		Upstream: upstream, Unit: "s",
		Berth: b, BerthNote: fmt.Sprintf("%.0f upstream blob GETs, berth CPU %.2f s; all processes %.2f CPU s, %.2f× the direct pull's", maxf(gets), median(berthCPU), median(pathCPU[berthName]), median(pathCPU[berthName])/median(pathCPU["direct"])), Proxy: ptr(p), RefName: "direct", Reference: ptr(d),
		RefNote: fmt.Sprintf("%.2f CPU s in all, %d cores %.0f%% busy", median(pathCPU["direct"]), runtime.NumCPU(), 100*median(pathCPU["direct"])/float64(runtime.NumCPU())/d),
		RatioOf: "pull ÷ direct pull; " + short, Ratio: b / d, ProxyRatio: ptr(p / d),
		Target: "≤ 1.00", TargetOp: "<=", TargetVal: 1.0, Samples: times,
	})
	return nil
}

// makeTarImage pushes repo:1, a linux image of n layers, each an
// uncompressed tar of one file of size random bytes (containerd unpacks it).
func makeTarImage(ctx context.Context, dir, addr, repo string, n int, size int64, seed uint64) (*image, error) {
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	out := &image{Repo: repo, Tag: "1"}
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.tar", strings.ReplaceAll(repo, "/", "_"), i))
		d, sz, err := randomTar(p, fmt.Sprintf("layer%d.bin", i), size, seed*100+uint64(i))
		if err != nil {
			return nil, err
		}
		h, _ := v1.NewHash(d)
		if img, err = mutate.AppendLayers(img, fileLayer{path: p, d: h, size: sz}); err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, blob{Digest: d, Size: sz, Path: p})
		out.Bytes += sz
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	out.Config = blob{Digest: cfgName.String(), Size: int64(len(raw))}
	out.Bytes += int64(len(raw))
	r, err := name.ParseReference(addr+"/"+repo+":"+out.Tag, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push %s: %w", r, err)
	}
	return out, saveManifest(img, out, dir)
}

// randomTar writes a tar holding one file, file, of size pseudo-random
// bytes to path; it returns the tar's digest and size.
func randomTar(path, file string, size int64, seed uint64) (string, int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	tw := tar.NewWriter(cw)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return "", 0, err
	}
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	if _, err := io.CopyN(tw, rand.NewChaCha8(key), size); err != nil {
		return "", 0, err
	}
	if err := tw.Close(); err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), cw.n, f.Close()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
