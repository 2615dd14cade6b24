package proctest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWarningsAreTheFirstWarningsButFailedRequests(t *testing.T) {
	log := filepath.Join(t.TempDir(), "berth.log")
	lines := "time=1 level=INFO msg=serving\n" +
		"time=2 level=WARN msg=\"upstream endpoint failing, not asked until a probe finds it answering\" kind=body\n" +
		"time=3 level=WARN msg=\"request failed\" status=503\n" +
		"{\"level\":\"ERROR\",\"msg\":\"store manifest\"}\n" +
		"{\"level\":\"WARN\",\"msg\":\"request failed\"}\n" +
		"time=4 level=WARN msg=third\n"
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Log: log}
	want := "2: time=2 level=WARN msg=\"upstream endpoint failing, not asked until a probe finds it answering\" kind=body\n" +
		"4: {\"level\":\"ERROR\",\"msg\":\"store manifest\"}"
	if got := p.Warnings(2); got != want {
		t.Fatalf("Warnings(2):\n%s\nwant:\n%s", got, want)
	}
}
