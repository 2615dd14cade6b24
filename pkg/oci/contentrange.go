package oci

import (
	"fmt"
	"strconv"
	"strings"
)

// ContentRangeAt reads the Content-Range of a 206 answer to "Range:
// bytes=offset-" ("bytes <first>-<last>/<total>") and returns the total
// size (-1 for "*"). It fails unless the range starts at offset and its
// numbers agree (first <= last < total). The upstream client and the
// peers both read their 206 answers with it.
func ContentRangeAt(v string, offset int64) (total int64, err error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("Content-Range %q for bytes=%d-: not a range from that offset", v, offset)
	}
	rest, ok := strings.CutPrefix(v, "bytes ")
	span, tot, ok2 := strings.Cut(rest, "/")
	f, l, ok3 := strings.Cut(span, "-")
	if !ok || !ok2 || !ok3 {
		return bad()
	}
	first, err1 := strconv.ParseInt(f, 10, 64)
	last, err2 := strconv.ParseInt(l, 10, 64)
	if err1 != nil || err2 != nil || first != offset || first < 0 || last < first {
		return bad()
	}
	if tot == "*" {
		return -1, nil
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil || total <= last {
		return bad()
	}
	return total, nil
}

// FirstRange reads a Range header's first range: [start, end), end -1 for
// open-ended; the whole blob (0, -1) when there is none or it is
// unreadable.
func FirstRange(h string) (start, end int64) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, -1
	}
	spec, _, _ = strings.Cut(spec, ",")
	a, b, _ := strings.Cut(spec, "-")
	start, err := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	if err != nil || start < 0 {
		return 0, -1
	}
	last, err := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	if err != nil || last < start {
		return start, -1
	}
	return start, last + 1
}
