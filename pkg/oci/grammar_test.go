package oci

import (
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// The regular expressions the hand matchers replace: distribution's path
// grammar alone for names (its NameRegexp would take a first segment for
// a registry host), its tag grammar for tags.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
)

// FuzzGrammar: validName, ValidTag and shaDigest accept exactly what the
// regular expressions and digest.Parse (sha256 and sha512) accept, and
// ValidDigest exactly what digest.Validate accepts.
func FuzzGrammar(f *testing.F) {
	for _, s := range []string{
		"", "a", "library/alpine", "a/b/c", "a__b", "a___b", "a--b", "a-", "-a", "a.b", "a..b", "a/", "/a", "a//b", "A", "a_b-c.d",
		"v1", "_v", ".v", "-v", "v1.2-rc_3", strings.Repeat("t", 128), strings.Repeat("t", 129),
		"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63),
		"sha512:" + strings.Repeat("0", 128), "sha384:" + strings.Repeat("0", 96), "sha256:", ":",
		"sha384:" + strings.Repeat("A", 96), "md5:" + strings.Repeat("0", 32), "sha256:" + strings.Repeat("a", 64) + "\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validName(s), nameRE.MatchString(s); got != want {
			t.Errorf("validName(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := ValidTag(s), tagRE.MatchString(s); got != want {
			t.Errorf("ValidTag(%q) = %v, regexp says %v", s, got, want)
		}
		d, err := digest.Parse(s)
		want := err == nil && (d.Algorithm() == digest.SHA256 || d.Algorithm() == digest.SHA512)
		got, ok := shaDigest(s)
		if ok != want || ok && got != d {
			t.Errorf("shaDigest(%q) = %q %v, digest.Parse says %q %v", s, got, ok, d, err)
		}
		if got, want := ValidDigest(digest.Digest(s)), digest.Digest(s).Validate(); (got == nil) != (want == nil) {
			t.Errorf("ValidDigest(%q) = %v, Validate says %v", s, got, want)
		}
	})
}
