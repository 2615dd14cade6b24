// Package leaktest fails a test binary whose goroutines outlive its tests
// (goleak), for every package whose tests start goroutines: servers, fills,
// gossip, clients. It ignores only what a library leaves for good, and
// waits a few seconds first for what ends on its own timer.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main runs m and exits: with m's code, or 1 when goroutines other than
// ignore's are still running 5 seconds after the tests passed.
func Main(m *testing.M, ignore ...goleak.Option) {
	os.Exit(Check(m.Run(), ignore...))
}

// Check returns code, or 1 when code is 0 and goroutines other than
// ignore's are still running 5 seconds on (memberlist's last probe of a
// node that left ends on its own timer; an http.Server's connection
// goroutines end as their sockets close). For a TestMain that runs more
// than m.Run.
func Check(code int, ignore ...goleak.Option) int {
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find(ignore...)
		if err == nil {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			return 1
		}
		time.Sleep(100 * time.Millisecond) // polling: nothing signals a goroutine's end
	}
}
