package oci

import "testing"

func TestContentRangeAt(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v      string
		offset int64
		total  int64 // -2: an error
	}{
		{"bytes 0-99/100", 0, 100},
		{"bytes 10-99/100", 10, 100},
		{"bytes 10-99/*", 10, -1},
		{"bytes 10-10/11", 10, 11},
		{"bytes 11-99/100", 10, -2}, // another offset
		{"bytes 10-99/99", 10, -2},  // last past the end
		{"bytes 10-9/100", 10, -2},  // last before first
		{"bytes -1-99/100", -1, -2},
		{"bytes 10-/100", 10, -2},
		{"bytes 10-99", 10, -2},
		{"items 10-99/100", 10, -2},
		{"bytes 10-99/x", 10, -2},
		{"", 0, -2},
	} {
		total, err := ContentRangeAt(c.v, c.offset)
		if (c.total == -2) != (err != nil) || (err == nil && total != c.total) {
			t.Errorf("ContentRangeAt(%q, %d) = %d, %v; want %d", c.v, c.offset, total, err, c.total)
		}
	}
}
