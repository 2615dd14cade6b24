package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// String formats d as Go does, without trailing zero units: "60s" prints
// as "1m", "90m" as "1h30m".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalYAML writes d as a duration string ("1m30s").
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string ("60s", "500ms", "1h30m"; a bare
// "0" is zero). An error is a *valueError naming the line; the config's
// walk reports it with the others in the file.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &valueError{line: n.Line, msg: `a duration must be a string like "60s"`}
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &valueError{line: n.Line, msg: err.Error()}
	}
	*d = v
	return nil
}

// ParseDuration parses a Go duration string such as "60s" or "500ms".
func ParseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want a number with a unit: 500ms, 60s, 1h)", s)
	}
	return Duration(v), nil
}

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12, "p": 1e15, "pb": 1e15,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
	"ti": 1 << 40, "tib": 1 << 40, "pi": 1 << 50, "pib": 1 << 50,
}

// ParseSize parses a byte count: a plain number ("1073741824"), or a number
// with a decimal (KB, MB, GB, TB, PB: powers of 1000) or binary (KiB, MiB,
// GiB, TiB, PiB: powers of 1024) unit, case-insensitive, optionally with a
// fraction ("1.5GiB"). The size must be positive; fractions of a byte round
// down.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, t[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit, like 50GiB", s)
	}
	if unit == "" || unit == "b" {
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > 0 {
			return n, nil // exact, beyond float64's 2^53
		}
	}
	b := math.Floor(v * mult)
	switch {
	case b < 1:
		return 0, fmt.Errorf("invalid size %q: must be at least one byte", s)
	case b >= math.MaxInt64:
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(b), nil
}

// parsePercent parses "80%" into 80. ok is false when s is not a percentage.
func parsePercent(s string) (p float64, ok bool, err error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, false, nil
	}
	p, err = strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || p <= 0 || p > 100 || math.IsNaN(p) {
		return 0, true, fmt.Errorf("invalid percentage %q: want more than 0%% and at most 100%%", s)
	}
	return p, true, nil
}

// QuotaBytes is the cache quota in bytes for a filesystem of fsTotal
// bytes: MaxSize as a size, or as a percentage of fsTotal ("80%"). 0 with
// a nil error means no quota (MaxSize ""). It errors when MaxSize does not
// parse or a percentage leaves less than a byte.
func (c Cache) QuotaBytes(fsTotal uint64) (int64, error) {
	if strings.TrimSpace(c.MaxSize) == "" {
		return 0, nil
	}
	p, ok, err := parsePercent(c.MaxSize)
	if err != nil {
		return 0, err
	}
	if !ok {
		return ParseSize(c.MaxSize)
	}
	b := math.Floor(float64(fsTotal) * p / 100)
	switch {
	case b < 1:
		return 0, fmt.Errorf("quota %s of a %d-byte filesystem is less than a byte", c.MaxSize, fsTotal)
	case b >= math.MaxInt64:
		return math.MaxInt64, nil
	}
	return int64(b), nil
}

// checkMaxSize reports whether s is a valid MaxSize: "", a size or a
// percentage.
func checkMaxSize(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	if _, ok, err := parsePercent(s); ok {
		return err
	}
	_, err := ParseSize(s)
	return err
}

// StripeMin reads peers.stripeSize: the smallest stripe in bytes, -1 for
// "off" (no striping), 0 for "" (the default).
func StripeMin(s string) (int64, error) {
	switch strings.TrimSpace(s) {
	case "":
		return 0, nil
	case "off":
		return -1, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n < 64<<10 {
		return 0, fmt.Errorf("stripe size %q: must be at least 64KiB (or off)", s)
	}
	return n, nil
}
