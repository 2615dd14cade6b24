package security

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// scrape returns berth's /metrics as sample lines.
func (b *berth) scrape(t *testing.T) []string {
	t.Helper()
	resp, err := plain.Get(b.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// series counts the series of metric name (name{ or a bare name) and sums
// their values.
func series(lines []string, name string) (n int, value float64) {
	for _, l := range lines {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") || strings.HasSuffix(name, "}") && strings.HasPrefix(l, name) {
			n++
			f, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			value += f
		}
	}
	return n, value
}

// floodGet asks berth for /v2/<path> and returns "<status> <errcode>" and
// the body.
func (b *berth) floodGet(cl *http.Client, method, path string) (string, []byte) {
	req, err := http.NewRequest(method, b.URL+"/v2/"+path, nil)
	if err != nil {
		return err.Error(), nil
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "+
		"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := cl.Do(req)
	if err != nil {
		return err.Error(), nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "body: " + err.Error(), body
	}
	return fmt.Sprint(resp.StatusCode, " ", errcodeOf(body)), body
}
