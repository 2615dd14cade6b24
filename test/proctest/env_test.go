package proctest

import (
	"net"
	"strconv"
	"testing"
)

// TestPickAddrBelowEphemeralRange: a picked port lies below the kernel's
// ephemeral range, where the machine's outgoing connections never take
// it, and is free for TCP and UDP (memberlist binds both).
func TestPickAddrBelowEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		addr, err := PickAddr()
		if err != nil {
			t.Fatal(err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := strconv.Atoi(port); host != "127.0.0.1" || p < pickFloor || p >= lo {
			t.Fatalf("picked %s, want 127.0.0.1 with a port in %d-%d", addr, pickFloor, lo-1)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("picked %s: %v", addr, err)
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			t.Fatalf("picked %s: udp: %v", addr, err)
		}
		u.Close()
	}
}
