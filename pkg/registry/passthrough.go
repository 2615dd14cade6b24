package registry

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/berth-registry/berth/pkg/oci"
)

// passthrough answers tags/list and referrers from the upstream: they list
// what the upstream has now, so they are not cached.
func (h *Handler) passthrough(w http.ResponseWriter, r *http.Request, rq oci.Request) error {
	if h.opts.Passthrough == nil {
		return fmt.Errorf("%s: no upstream to pass through to: %w", rq.Kind, oci.ErrUnavailable)
	}
	q := r.URL.Query()
	q.Del("ns")
	resp, err := h.opts.Passthrough.Get(r.Context(), rq, q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Content-Length", "Docker-Content-Digest", "OCI-Filters-Applied"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(link, rq.Repo.Name, r))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodGet {
		_, _ = io.Copy(w, resp.Body)
	}
	return nil
}

// rewriteLink points an upstream's pagination Link back at berth: the
// repository as this client named it, and its ns parameter.
func rewriteLink(link, upstreamName string, r *http.Request) string {
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return link
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil {
		return link
	}
	clientName := strings.TrimPrefix(r.URL.Path, "/v2/")
	for _, suffix := range []string{"/tags/list", "/referrers/"} {
		if i := strings.LastIndex(clientName, suffix); i > 0 {
			clientName = clientName[:i]
			break
		}
	}
	u.Path = "/v2/" + clientName + strings.TrimPrefix(u.Path, "/v2/"+upstreamName)
	u.Scheme, u.Host = "", ""
	if ns := r.URL.Query().Get("ns"); ns != "" {
		q := u.Query()
		q.Set("ns", ns)
		u.RawQuery = q.Encode()
	}
	return link[:start+1] + u.String() + link[end:]
}
