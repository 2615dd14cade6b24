package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
)

// pinRoutes are the pinning routes of the admin API (berth pin, unpin,
// ls --pinned, preload):
//
//	POST   /admin/pin?ref=IMAGE[&digest=DIGEST]   pin a stored image; digest: the one the caller resolved
//	DELETE /admin/pin?ref=IMAGE                   unpin it (a bare digest: every pin rooted there)
//	GET    /admin/pins                            every pin with what it reaches now (JSON)
//	GET    /admin/images                          what the store holds now: sizes, pinned, pulls (berth ls)
func (s *Server) pinRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/pin", s.adminPin)
	mux.HandleFunc("DELETE /admin/pin", s.adminUnpin)
	mux.HandleFunc("GET /admin/pins", s.adminPins)
	mux.HandleFunc("GET /admin/images", s.adminImages)
}

func (s *Server) adminImages(w http.ResponseWriter, _ *http.Request) {
	imgs, err := s.store.Images()
	if err != nil {
		adminError(w, errcode.ErrorCodeUnknown, err)
		return
	}
	writeJSON(w, imgs)
}

// adminPin pins a stored image and answers what the pin reaches; 404 when
// the store lacks it.
func (s *Server) adminPin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ref := q.Get("ref")
	var d digest.Digest
	if v := q.Get("digest"); v != "" {
		var err error
		if d, err = digest.Parse(v); err != nil {
			adminError(w, errcode.ErrorCodeDigestInvalid, fmt.Errorf("digest %q: %w", v, err))
			return
		}
	}
	if ref == "" {
		ref = d.String()
	}
	if ref == "" {
		adminError(w, errcode.ErrorCodeNameInvalid, errors.New("name an image: ref=IMAGE or digest=DIGEST"))
		return
	}
	if !checkRef(w, ref) {
		return
	}
	source := "api"
	if q.Get("source") == "preload" {
		source = "preload"
	}
	st, err := airgap.PinRef(s.store, ref, d, source)
	if err != nil {
		adminError(w, pinErrCode(err), err)
		return
	}
	s.log.Info("pinned", "ref", st.Ref, "digest", st.Digest, "blobs", st.Blobs, "bytes", st.Bytes)
	writeJSON(w, st)
}

func (s *Server) adminUnpin(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		adminError(w, errcode.ErrorCodeNameInvalid, errors.New("name an image: ref=IMAGE"))
		return
	}
	if !checkRef(w, ref) {
		return
	}
	if err := airgap.UnpinRef(s.store, ref); err != nil {
		adminError(w, pinErrCode(err), err)
		return
	}
	s.log.Info("unpinned", "ref", ref)
	writeJSON(w, map[string]string{"unpinned": ref})
}

func (s *Server) adminPins(w http.ResponseWriter, _ *http.Request) {
	pins, err := s.store.Pins()
	if err != nil {
		adminError(w, errcode.ErrorCodeUnknown, err)
		return
	}
	writeJSON(w, pins)
}

// checkRef refuses a ref that is neither an image reference nor a digest.
func checkRef(w http.ResponseWriter, ref string) bool {
	if _, err := digest.Parse(ref); err == nil {
		return true
	}
	if _, _, _, err := airgap.ParseRef(ref); err != nil {
		adminError(w, errcode.ErrorCodeNameInvalid, err)
		return false
	}
	return true
}

func pinErrCode(err error) errcode.ErrorCode {
	if errors.Is(err, cache.ErrNotFound) {
		return errcode.ErrorCodeManifestUnknown
	}
	return errcode.ErrorCodeUnknown
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
