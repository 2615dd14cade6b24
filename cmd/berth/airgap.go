package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/distribution/reference"
	"github.com/spf13/cobra"
)

func exportCmd() *cobra.Command {
	var (
		sf           storeFlags
		addr, out    string
		file         string
		pinned, asJS bool
	)
	c := &cobra.Command{
		Use:   "export -o OUT [IMAGE...]",
		Short: "Write images from a store as an OCI image layout (directory, or a tar when OUT ends in .tar)",
		Long: "Write images (every platform the store holds, configs, layers, and their signatures, SBOMs\n" +
			"and attestations) as one OCI image layout: a directory, or a tar (oci-archive) when OUT\n" +
			"ends in .tar. index.json names each image by its full reference (annotation\n" +
			"org.opencontainers.image.ref.name), so skopeo, crane, oras and berth import read it.\n" +
			"Images come as arguments, one a line from -f FILE (# comments), or --pinned for every\n" +
			"pinned image. With --cache-dir (or --config) it reads a stopped store; with --addr it\n" +
			"asks a running berth's admin API. Every blob is checked against its digest on the way.",
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := refList(args, file)
			if err != nil {
				return err
			}
			if len(refs) == 0 && !pinned {
				return errors.New("name images as arguments, with -f FILE, or --pinned")
			}
			w, finish, err := layoutWriter(out, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			var rep airgap.Report
			if addr != "" {
				err = exportRemote(cmd, addr, refs, pinned, w)
			} else {
				rep, err = exportLocal(cmd, &sf, refs, pinned, w)
			}
			if err = finish(err); err != nil {
				return err
			}
			report := cmd.OutOrStdout()
			if out == "-" { // the archive went there
				report = cmd.ErrOrStderr()
			}
			if asJS {
				return json.NewEncoder(report).Encode(rep)
			}
			if addr == "" {
				fmt.Fprintf(report, "exported %d images (%d referrers): %d manifests, %d blobs, %d bytes to %s\n",
					rep.Images, rep.Referrers, rep.Manifests, rep.Blobs, rep.Bytes, out)
				for _, d := range rep.Missing {
					fmt.Fprintf(report, "left out %s: not in the store (a platform never pulled)\n", d)
				}
			} else {
				fmt.Fprintf(report, "exported to %s\n", out)
			}
			return nil
		},
	}
	sf.add(c)
	c.Flags().StringVar(&addr, "addr", "", "admin address of a running berth (http://127.0.0.1:5001) instead of opening the store")
	c.Flags().StringVarP(&out, "output", "o", "", "layout directory, a tar file when it ends in .tar, or - for a tar on standard output")
	c.Flags().StringVarP(&file, "file", "f", "", "file of image references, one a line")
	c.Flags().BoolVar(&pinned, "pinned", false, "export every pinned image too")
	c.Flags().BoolVar(&asJS, "json", false, "print the report as JSON")
	c.MarkFlagRequired("output")
	return c
}

// layoutWriter opens OUT: a tar written under a temp name and renamed
// when whole, or a directory. finish closes it, or removes it on error.
func layoutWriter(out string, stdout io.Writer) (airgap.Writer, func(error) error, error) {
	if out == "-" {
		bw := bufio.NewWriterSize(stdout, 1<<20)
		return airgap.NewTarWriter(bw), func(err error) error {
			if err == nil {
				err = bw.Flush()
			}
			return err
		}, nil
	}
	if !strings.HasSuffix(out, ".tar") {
		w, err := airgap.NewDirWriter(out)
		if err != nil {
			return nil, nil, err
		}
		return w, func(err error) error { return err }, nil
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-")
	if err != nil {
		return nil, nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	finish := func(err error) error {
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(f.Name(), 0o644)
		}
		if err == nil {
			err = os.Rename(f.Name(), out)
		}
		if err != nil {
			os.Remove(f.Name())
		}
		return err
	}
	return airgap.NewTarWriter(bw), finish, nil
}

func exportLocal(cmd *cobra.Command, sf *storeFlags, refs []string, pinned bool, w airgap.Writer) (airgap.Report, error) {
	s, err := sf.open("pass --addr with its admin address to export from it")
	if err != nil {
		w.Abort()
		return airgap.Report{}, err
	}
	defer s.Close()
	imgs, err := resolveAll(s, refs, pinned)
	if err != nil {
		w.Abort()
		return airgap.Report{}, err
	}
	return airgap.Export(cmd.Context(), s, imgs, w, stderrLogger())
}

// resolveAll finds every named image in s (and, with pinned, the pinned
// ones), failing with all the names it could not find.
func resolveAll(s *cache.Store, refs []string, pinned bool) ([]airgap.Image, error) {
	var (
		imgs []airgap.Image
		errs []error
	)
	for _, ref := range refs {
		img, err := airgap.Resolve(s, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		imgs = append(imgs, img)
	}
	if pinned {
		p, err := airgap.PinnedImages(s)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, p...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("not in the store (preload them first):\n%w", err)
	}
	return imgs, nil
}

func exportRemote(cmd *cobra.Command, addr string, refs []string, pinned bool, w airgap.Writer) error {
	q := url.Values{"ref": refs}
	if pinned {
		q.Set("pinned", "true")
	}
	resp, err := adminDo(cmd, http.MethodGet, addr, "/admin/export?"+q.Encode(), nil)
	if err != nil {
		w.Abort()
		return err
	}
	defer resp.Body.Close()
	_, err = airgap.CopyLayout(resp.Body, w)
	return err
}

func importCmd() *cobra.Command {
	var (
		sf         storeFlags
		addr, repo string
		noPin, js  bool
	)
	c := &cobra.Command{
		Use:   "import IN",
		Short: "Load an OCI image layout (directory or tar) or a docker save tar into a store",
		Long: "Load the images of an OCI image layout (a directory, or a tar of one) or of a docker save\n" +
			"tar into a store, pin them (unless --no-pin) and record their tags. Every blob is\n" +
			"checked against its digest, and every image for completeness, before anything is kept:\n" +
			"a tampered or truncated archive fails naming the digest and leaves the store as it was.\n" +
			"With --cache-dir (or --config) it opens a stopped store; with --addr it sends the archive\n" +
			"to a running berth's admin API. IN - reads a tar from standard input.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := airgap.ImportOptions{NoPin: noPin, Log: stderrLogger()}
			if repo != "" {
				named, err := reference.ParseNormalizedNamed(repo)
				if err != nil || !reference.IsNameOnly(named) {
					return fmt.Errorf("--repo %s: want registry/name", repo)
				}
				o.Repo = oci.Repo{Registry: reference.Domain(named), Name: reference.Path(named)}
			}
			var (
				rep airgap.Report
				err error
			)
			if addr != "" {
				rep, err = importRemote(cmd, addr, args[0], o)
			} else {
				rep, err = importLocal(cmd, &sf, args[0], o)
			}
			if err != nil {
				return err
			}
			if js {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "imported %d images: %d manifests, %d blobs, %d bytes\n", rep.Images, rep.Manifests, rep.Blobs, rep.Bytes)
			for _, t := range rep.Tags {
				fmt.Fprintf(out, "tagged %s\n", t)
			}
			for _, d := range rep.Missing {
				fmt.Fprintf(out, "not in the archive: index entry %s (a platform left out)\n", d)
			}
			for _, n := range rep.Skipped {
				fmt.Fprintf(out, "untagged %s: name has no repository (pass --repo)\n", n)
			}
			return nil
		},
	}
	sf.add(c)
	c.Flags().StringVar(&addr, "addr", "", "admin address of a running berth (http://127.0.0.1:5001) instead of opening the store")
	c.Flags().StringVar(&repo, "repo", "", "registry/name for entries named by a bare tag (skopeo's oci:DIR:TAG)")
	c.Flags().BoolVar(&noPin, "no-pin", false, "do not pin what is imported")
	c.Flags().BoolVar(&js, "json", false, "print the report as JSON")
	return c
}

func importLocal(cmd *cobra.Command, sf *storeFlags, in string, o airgap.ImportOptions) (airgap.Report, error) {
	s, err := sf.open("pass --addr with its admin address to import into it")
	if err != nil {
		return airgap.Report{}, err
	}
	defer s.Close()
	if in == "-" {
		return airgap.ImportTar(cmd.Context(), s, bufio.NewReaderSize(cmd.InOrStdin(), 1<<20), o)
	}
	if fi, err := os.Stat(in); err == nil && fi.IsDir() {
		return airgap.ImportDir(cmd.Context(), s, in, o)
	}
	f, err := os.Open(in)
	if err != nil {
		return airgap.Report{}, err
	}
	defer f.Close()
	return airgap.ImportTar(cmd.Context(), s, bufio.NewReaderSize(f, 1<<20), o)
}

func importRemote(cmd *cobra.Command, addr, in string, o airgap.ImportOptions) (airgap.Report, error) {
	var body io.Reader
	switch fi, err := os.Stat(in); {
	case in == "-":
		body = cmd.InOrStdin()
	case err != nil:
		return airgap.Report{}, err
	case fi.IsDir():
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(airgap.TarDir(in, pw)) }()
		defer pr.Close()
		body = pr
	default:
		f, err := os.Open(in)
		if err != nil {
			return airgap.Report{}, err
		}
		defer f.Close()
		body = f
	}
	q := url.Values{}
	if o.Repo.Name != "" {
		q.Set("repo", o.Repo.String())
	}
	if o.NoPin {
		q.Set("pin", "false")
	}
	resp, err := adminDo(cmd, http.MethodPost, addr, "/admin/import?"+q.Encode(), body)
	if err != nil {
		return airgap.Report{}, err
	}
	defer resp.Body.Close()
	var rep airgap.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return rep, fmt.Errorf("import report: %w", err)
	}
	return rep, nil
}

// adminDo sends one request to a running berth's admin API and returns a
// 200 response; any other status becomes an error with the server's
// message.
func adminDo(cmd *cobra.Command, method, addr, path string, body io.Reader) (*http.Response, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	req, err := http.NewRequestWithContext(cmd.Context(), method, strings.TrimSuffix(addr, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, errcodeMessage(msg))
	}
	return resp, nil
}

// errcodeMessage returns the messages of an OCI errcode body, else the
// body as it is.
func errcodeMessage(body []byte) string {
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		var msgs []string
		for _, x := range e.Errors {
			msgs = append(msgs, x.Code+": "+x.Message)
		}
		return strings.Join(msgs, "; ")
	}
	return strings.TrimSpace(string(body))
}

// refList merges references given as arguments and in file (one a line,
// blank lines and # comments ignored).
func refList(args []string, file string) ([]string, error) {
	refs := append([]string(nil), args...)
	if file == "" {
		return refs, nil
	}
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			refs = append(refs, line)
		}
	}
	return refs, sc.Err()
}

// stderrLogger logs warnings of a command to standard error.
func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
