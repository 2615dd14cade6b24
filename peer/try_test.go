package peer

import (
	"net/http"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/google/go-cmp/cmp"
)

// TestBlobHeader pins the headers of a peer's blob request, as tryBlob
// (a holder's or a relay source's stream) and tryRange (a stripe) send them.
func TestBlobHeader(t *testing.T) {
	t.Parallel()
	relayed := oci.Request{RelayHops: 2, RelayStart: 0, RelayEnd: 1 << 20, RelaySize: 8 << 20}
	for _, tc := range []struct {
		name           string
		req            oci.Request
		relay          bool
		size, off, end int64
		want           http.Header
	}{
		{name: "whole blob from a holder", end: -1, want: http.Header{}},
		{name: "the rest from a holder", off: 1000, end: -1, want: http.Header{"Range": {"bytes=1000-"}}},
		{name: "first bytes from a holder", end: 1 << 20, want: http.Header{"Range": {"bytes=0-1048575"}}},
		{name: "holder ignores the relay size", req: relayed, size: 8 << 20, end: -1, want: http.Header{}},
		{name: "relay, size unknown", relay: true, end: -1, want: http.Header{
			oci.RelayHopHeader: {"1"},
		}},
		{name: "relay of bytes a relay asked for", req: relayed, relay: true, size: 8 << 20, off: 4096, end: -1, want: http.Header{
			"Range":             {"bytes=4096-"},
			oci.RelayHopHeader:  {"3"},
			oci.RelaySizeHeader: {"8388608"},
		}},
		{name: "stripe outside the relayed bytes", req: relayed, relay: true, size: 8 << 20, off: 2 << 20, end: 4 << 20, want: http.Header{
			"Range":             {"bytes=2097152-4194303"},
			oci.RelayHopHeader:  {"1"},
			oci.RelaySizeHeader: {"8388608"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, blobHeader(tc.req, tc.relay, tc.size, tc.off, tc.end)); diff != "" {
				t.Errorf("blobHeader (-want +got):\n%s", diff)
			}
		})
	}
}
