// Command gofloor is the Go floor of the bench's peak-RSS rows: the
// smallest net/http server that serves one file to many clients the way
// berth serves a blob (http.ServeContent from an *os.File, so sendfile,
// Go's default TCP settings, one connection goroutine per client plus
// net/http's background reader). Whatever it needs per client and for its
// runtime, any Go server built on net/http needs; what berth needs beyond
// it is berth's own.
//
// Usage: gofloor -addr 127.0.0.1:PORT -file PATH (every GET or HEAD of any
// path gets the file; anything else 405).
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	file := flag.String("file", "", "the file every GET gets")
	flag.Parse()
	if *file == "" {
		log.Fatal("gofloor: -file is required")
	}
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 30 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			f, err := os.Open(*file)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", fi.ModTime(), f)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
