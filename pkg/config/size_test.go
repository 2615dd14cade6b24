package config

import (
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64 // 0: error
	}{
		{"1073741824", 1 << 30},
		{"9223372036854775807", math.MaxInt64},
		{"50GiB", 50 << 30},
		{"50 GiB", 50 << 30},
		{"50gib", 50 << 30},
		{"50Gi", 50 << 30},
		{"500MB", 500e6},
		{"500M", 500e6},
		{"1.5GiB", 3 << 29},
		{"2TiB", 2 << 40},
		{"1KB", 1000},
		{"1KiB", 1024},
		{"512B", 512},
		{"", 0},
		{"GiB", 0},
		{"0", 0},
		{"0.1B", 0},
		{"-5GiB", 0},
		{"5XB", 0},
		{"80%", 0},
		{"1.2.3MB", 0},
		{"99999999PiB", 0},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("ParseSize(%q) = %d, want an error", tt.in, got)
		case tt.want != 0 && (err != nil || got != tt.want):
			t.Errorf("ParseSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		case err != nil && !strings.Contains(err.Error(), tt.in):
			t.Errorf("ParseSize(%q) error %q does not quote the input", tt.in, err)
		}
	}
}

func TestQuotaBytes(t *testing.T) {
	t.Parallel()
	const fs = 1000 << 30
	tests := []struct {
		maxSize string
		fsTotal uint64
		want    int64
		wantErr bool
	}{
		{"", fs, 0, false},
		{"80%", fs, 800 << 30, false},
		{"100%", fs, 1000 << 30, false},
		{"12.5%", 800, 100, false},
		{" 50 % ", 10, 5, false},
		{"50GiB", fs, 50 << 30, false},
		{"50GiB", 0, 50 << 30, false},
		{"0%", fs, 0, true},
		{"101%", fs, 0, true},
		{"x%", fs, 0, true},
		{"50%", 1, 0, true},
		{"10QB", fs, 0, true},
		{"100%", math.MaxUint64, math.MaxInt64, false},
	}
	for _, tt := range tests {
		got, err := Cache{MaxSize: tt.maxSize}.QuotaBytes(tt.fsTotal)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("QuotaBytes(%q, %d) = %d, %v; want %d, error %v", tt.maxSize, tt.fsTotal, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		text string
	}{
		{0, "0s"},
		{500 * time.Millisecond, "500ms"},
		{60 * time.Second, "1m"},
		{90 * time.Second, "1m30s"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"},
		{10 * time.Minute, "10m"},
	}
	for _, tt := range tests {
		out, err := yaml.Marshal(struct{ D Duration }{Duration(tt.d)})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "d: "+tt.text {
			t.Errorf("marshal %s: %q, want %q", tt.d, got, "d: "+tt.text)
		}
		var back struct{ D Duration }
		if err := yaml.Unmarshal(out, &back); err != nil || back.D.D() != tt.d {
			t.Errorf("unmarshal %q: %s, %v; want %s", out, back.D, err, tt.d)
		}
	}
	var v struct{ D Duration }
	for _, bad := range []string{"d: 60", "d: soon", "d: [1s]", `d: "-"`, "d: {a: 1s}"} {
		if err := yaml.Unmarshal([]byte(bad), &v); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("unmarshal %q: got %v, want an error with its line", bad, err)
		}
	}
}
