package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate and key pair from files and re-reads
// them when either file's modification time or size changes, or when
// Reload is called (SIGHUP). A pair that fails to load leaves the previous
// one in service, so a half-written renewal never takes HTTPS down.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex       // guards cert, seen and failed
	cert   *tls.Certificate // the pair in service
	seen   [2]fileStamp     // of certFile and keyFile when cert was loaded
	failed [2]fileStamp     // of the files when a load last failed: not retried until they change
}

// fileStamp is what tells a changed file: modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// newCertReloader loads the pair once; an error means it could not.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the pair now. On error the pair in service stays.
// It is safe for concurrent use.
func (r *certReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

func (r *certReloader) loadLocked() error {
	// Stamp before reading: a write racing the read changes the stamp
	// again, so the next handshake reloads once more.
	cs, err := stampOf(r.certFile)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = [2]fileStamp{cs, ks}
		return fmt.Errorf("tls pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.seen = &cert, [2]fileStamp{cs, ks}
	return nil
}

// changedLocked reports whether either file differs from the loaded pair
// and from a pair that failed to load.
func (r *certReloader) changedLocked() bool {
	cs, err1 := stampOf(r.certFile)
	ks, err2 := stampOf(r.keyFile)
	if err1 != nil || err2 != nil {
		return false // gone for a moment (a rename in progress): keep serving
	}
	now := [2]fileStamp{cs, ks}
	same := func(b [2]fileStamp) bool { return now[0].equal(b[0]) && now[1].equal(b[1]) }
	return !same(r.seen) && !same(r.failed)
}

func (a fileStamp) equal(b fileStamp) bool { return a.mod.Equal(b.mod) && a.size == b.size }

// GetCertificate is tls.Config.GetCertificate: the current pair, re-read
// first if the files changed. It costs two stats per handshake and blocks
// only while a reload reads the files.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changedLocked() {
		if err := r.loadLocked(); err != nil {
			r.log.Warn("tls reload, keeping the previous certificate", "err", err)
		} else {
			r.log.Info("tls certificate reloaded", "cert", r.certFile)
		}
	}
	return r.cert, nil
}

// tlsConfig is the HTTPS listener's configuration.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
