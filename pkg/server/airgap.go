package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
)

// adminRoutes are the admin API of air-gapped sites, on the admin listener
// only (never the registry's):
//
//	GET  /admin/export?ref=IMAGE&ref=...&pinned=true   an OCI layout tar
//	POST /admin/import?repo=REGISTRY/NAME&pin=false    body: an OCI layout or docker save tar
//	POST /admin/pin, DELETE /admin/pin, GET /admin/pins  see pins.go
func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/export", s.adminExport)
	mux.HandleFunc("POST /admin/import", s.adminImport)
	s.pinRoutes(mux)
}

// adminExport streams the named images as a layout tar. Names are
// resolved before the first byte, so an unknown image is a clean 404; a
// failure after that breaks the stream, which the client's digest checks
// catch.
func (s *Server) adminExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var (
		imgs []airgap.Image
		errs []error
	)
	for _, ref := range q["ref"] {
		img, err := airgap.Resolve(s.store, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		imgs = append(imgs, img)
	}
	if q.Get("pinned") == "true" {
		p, err := airgap.PinnedImages(s.store)
		if err != nil {
			errs = append(errs, err)
		}
		imgs = append(imgs, p...)
	}
	if err := errors.Join(errs...); err != nil {
		adminError(w, errcode.ErrorCodeManifestUnknown, err)
		return
	}
	if len(imgs) == 0 {
		adminError(w, errcode.ErrorCodeManifestUnknown, errors.New("no images named (ref=IMAGE or pinned=true)"))
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	bw := bufio.NewWriterSize(w, 1<<20)
	rep, err := airgap.Export(r.Context(), s.store, imgs, airgap.NewTarWriter(bw), s.log)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.Warn("admin export", "err", err)
		panic(http.ErrAbortHandler) // the client sees a broken stream, not a short layout
	}
	s.log.Info("admin export", "images", rep.Images, "blobs", rep.Blobs, "bytes", rep.Bytes)
}

// adminImport loads the request body into the store and answers the
// report as JSON. A bad archive is a 400 naming the digest; the store is
// left as it was.
func (s *Server) adminImport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := airgap.ImportOptions{NoPin: q.Get("pin") == "false", Log: s.log}
	if repo := q.Get("repo"); repo != "" {
		named, err := reference.ParseNormalizedNamed(repo)
		if err != nil || !reference.IsNameOnly(named) {
			adminError(w, errcode.ErrorCodeNameInvalid, fmt.Errorf("repo %q: want registry/name", repo))
			return
		}
		o.Repo = oci.Repo{Registry: reference.Domain(named), Name: reference.Path(named)}
	}
	rep, err := airgap.ImportTar(r.Context(), s.store, bufio.NewReaderSize(r.Body, 1<<20), o)
	if err != nil {
		code := errcode.ErrorCodeUnknown
		switch {
		case errors.Is(err, oci.ErrDigestMismatch), errors.Is(err, oci.ErrDigestInvalid):
			code = errcode.ErrorCodeDigestInvalid
		case errors.Is(err, airgap.ErrIncomplete), errors.Is(err, cache.ErrNotFound):
			code = errcode.ErrorCodeBlobUnknown
		case errors.Is(err, airgap.ErrNotLayout), errors.Is(err, oci.ErrTooLarge):
			code = errcode.ErrorCodeManifestInvalid
		}
		if code == errcode.ErrorCodeUnknown {
			code = errcode.ErrorCodeManifestInvalid // an unreadable archive is the client's
		}
		s.log.Warn("admin import", "err", err)
		adminError(w, code, err)
		return
	}
	s.log.Info("admin import", "images", rep.Images, "blobs", rep.Blobs, "bytes", rep.Bytes, "tags", len(rep.Tags))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

// adminError writes err as OCI errcode JSON: 404 for an unknown image,
// 500 for the store's own failures, 400 for the rest (a bad archive or
// parameter, rather than the code's own 404 where it has one).
func adminError(w http.ResponseWriter, code errcode.ErrorCode, err error) {
	status := http.StatusBadRequest
	switch code {
	case errcode.ErrorCodeManifestUnknown:
		status = http.StatusNotFound
	case errcode.ErrorCodeUnknown:
		status = http.StatusInternalServerError
	}
	writeErrcode(w, status, code.WithMessage(err.Error()))
}
