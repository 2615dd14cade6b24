package oci

import (
	"strings"

	"github.com/opencontainers/go-digest"
)

// The request grammar, matched by hand: a regexp match per request was 7%
// of berth's CPU serving manifest hits. FuzzGrammar checks each function
// against the regular expression it replaces.

// validName reports whether s is a repository name by distribution's path
// grammar: components of [a-z0-9]+ joined by '.', '_', '__' or one or
// more '-', separated by '/'.
func validName(s string) bool {
	for c := range strings.SplitSeq(s, "/") {
		if !validComponent(c) {
			return false
		}
	}
	return true
}

func validComponent(c string) bool {
	i := 0
	for {
		j := i
		for j < len(c) && (c[j] >= 'a' && c[j] <= 'z' || c[j] >= '0' && c[j] <= '9') {
			j++
		}
		switch {
		case j == i:
			return false // empty, or a separator not between alphanumerics
		case j == len(c):
			return true
		}
		switch c[j] {
		case '.':
			j++
		case '_':
			j++
			if j < len(c) && c[j] == '_' {
				j++
			}
		case '-':
			for j < len(c) && c[j] == '-' {
				j++
			}
		default:
			return false
		}
		i = j
	}
}

// ValidTag reports whether s is a tag in distribution/reference's grammar
// (a word character, then at most 127 word characters, '.' or '-'): what a
// request path, an archive's image name or a pin may name.
func ValidTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || !isWord(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isWord(s[i]) && s[i] != '.' && s[i] != '-' {
			return false
		}
	}
	return true
}

func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// shaDigest returns s as a digest when it is a sha256 or sha512 digest in
// canonical form (lower-case hex of the right length), which is all
// digest.Parse would accept of those algorithms.
func shaDigest(s string) (digest.Digest, bool) {
	var hex string
	switch {
	case strings.HasPrefix(s, "sha256:"):
		hex = s[len("sha256:"):]
		if len(hex) != 64 {
			return "", false
		}
	case strings.HasPrefix(s, "sha512:"):
		hex = s[len("sha512:"):]
		if len(hex) != 128 {
			return "", false
		}
	default:
		return "", false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return digest.Digest(s), true
}

// ValidDigest is d.Validate() without its regular expression for the
// digests berth serves, sha256 and sha512, matched by hand (FuzzGrammar
// checks the two agree); any other algorithm goes to d.Validate(). The
// store checks every digest it opens with it: a regexp per hit otherwise.
func ValidDigest(d digest.Digest) error {
	if _, ok := shaDigest(string(d)); ok {
		return nil
	}
	return d.Validate()
}
