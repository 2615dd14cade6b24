package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/berth-registry/berth/cache"
)

// printImages writes one line per image the store holds.
func printImages(w io.Writer, imgs []cache.ImageEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tBLOBS\tMISSING\tPINNED\tPULLS\tLAST PULLED")
	for _, e := range imgs {
		pinned := "no"
		if e.Pinned {
			pinned = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", imageName(e), short(e.Digest.String()), humanBytes(e.Size), e.Blobs, e.Missing, pinned, e.Pulls, stamp(e.LastPulled))
	}
	return tw.Flush()
}

func imageName(e cache.ImageEntry) string {
	switch {
	case e.Name == "":
		return e.Digest.String()
	case e.Tag == "":
		return e.Registry + "/" + e.Name + "@" + short(e.Digest.String())
	}
	return e.Registry + "/" + e.Name + ":" + e.Tag
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func writeCSV(w io.Writer, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}

func imagesCSV(w io.Writer, imgs []cache.ImageEntry) error {
	rows := [][]string{{"registry", "name", "tag", "digest", "mediaType", "sizeBytes", "blobs", "missing", "pinned", "pulls", "lastPulled", "checked"}}
	for _, e := range imgs {
		rows = append(rows, []string{e.Registry, e.Name, e.Tag, e.Digest.String(), e.MediaType, strconv.FormatInt(e.Size, 10),
			strconv.Itoa(e.Blobs), strconv.Itoa(e.Missing), strconv.FormatBool(e.Pinned), strconv.FormatInt(e.Pulls, 10), rfc3339(e.LastPulled), rfc3339(e.Checked)})
	}
	return writeCSV(w, rows)
}

func pinsCSV(w io.Writer, pins []cache.PinStatus) error {
	rows := [][]string{{"ref", "digest", "current", "blobs", "sizeBytes", "missing", "source", "created"}}
	for _, p := range pins {
		rows = append(rows, []string{p.Ref, p.Digest.String(), p.Current.String(), strconv.Itoa(p.Blobs), strconv.FormatInt(p.Bytes, 10),
			strconv.Itoa(len(p.Missing)), p.Source, rfc3339(p.Created)})
	}
	return writeCSV(w, rows)
}

// auditCSV writes one row per piece of content served.
func auditCSV(w io.Writer, repos []cache.AuditRepo) error {
	rows := [][]string{{"registry", "name", "kind", "tag", "digest", "count", "first", "last"}}
	for _, r := range repos {
		for _, k := range []struct {
			kind string
			es   []cache.AuditEntry
		}{{"tag", r.Tags}, {"manifest", r.Manifests}, {"blob", r.Blobs}} {
			for _, e := range k.es {
				rows = append(rows, []string{r.Registry, r.Name, k.kind, e.Tag, e.Digest.String(), strconv.FormatInt(e.Count, 10), rfc3339(e.First), rfc3339(e.Last)})
			}
		}
	}
	return writeCSV(w, rows)
}
