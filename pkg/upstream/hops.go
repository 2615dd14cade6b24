package upstream

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// HopHeader counts the berth instances a request has passed through. The
// client sends the count of its incoming request plus one (1 when the
// request did not come from a berth).
const HopHeader = "X-Berth-Hops"

// MaxHops is the hop count from which a berth refuses a request as a loop
// (a chain of berths longer than a site cache in front of node caches is
// taken for a mirror loop).
const MaxHops = 4

type hopsKey struct{}

// WithHops returns ctx carrying the hop count of the incoming request, so
// upstream requests made under it send n+1.
func WithHops(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, hopsKey{}, n)
}

// HopsOf returns the hop count ctx carries (0 if none).
func HopsOf(ctx context.Context) int { return hopsFrom(ctx) }

func hopsFrom(ctx context.Context) int {
	n, _ := ctx.Value(hopsKey{}).(int)
	return n
}

// Hops reads the hop count of an incoming request: 0 when the header is
// absent. An unreadable or negative value is an error.
func Hops(h http.Header) (int, error) {
	v := h.Get(HopHeader)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: not a hop count", HopHeader, v)
	}
	return n, nil
}
