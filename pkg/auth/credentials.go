package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
)

// ErrBadCredentials is the answer to credentials that do not check: an
// unknown user or token, a wrong password, an unsupported scheme.
var ErrBadCredentials = errors.New("invalid credentials")

// Authenticator checks the credentials a client sends. Its methods are safe
// for concurrent use; Reload swaps the files' contents atomically.
type Authenticator struct {
	htpasswd, tokens string // file paths; "" when unset

	mu    sync.RWMutex // guards creds and gen
	creds *credentials
	gen   uint64 // counts Reloads: cache entries of an older gen are void

	// Verified basic credentials, keyed by SHA-256 of "user\x00password",
	// so a client's every request does not cost a bcrypt comparison; and
	// recent failures, so a replayed wrong password costs nothing either.
	// Both are emptied by Reload.
	good *lru.Cache[[32]byte, verdict]
	bad  *lru.Cache[[32]byte, uint64] // -> gen
	// sem bounds concurrent bcrypt comparisons: a flood of wrong passwords
	// takes that many cores at most.
	sem chan struct{}
}

type verdict struct {
	user string
	kind string
	gen  uint64
}

type credentials struct {
	users  map[string][]byte   // htpasswd user -> bcrypt hash
	tokens map[[32]byte]string // SHA-256 of a token -> its name
	names  map[string]bool     // token names
	// dummy is compared against when the user is unknown, so an unknown
	// user takes as long as a wrong password: a hash of the users' cost.
	dummy []byte
}

// NewAuthenticator loads the htpasswd and token files (either may be "").
// Errors name the file and line; a secret never appears in them.
func NewAuthenticator(htpasswd, tokens string) (*Authenticator, error) {
	a := &Authenticator{htpasswd: htpasswd, tokens: tokens, sem: make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))}
	a.good, _ = lru.New[[32]byte, verdict](4096)
	a.bad, _ = lru.New[[32]byte, uint64](4096)
	c, err := a.load()
	if err != nil {
		return nil, err
	}
	a.creds = c
	return a, nil
}

// Enabled reports whether any credential file is configured. Without one,
// every client is anonymous and Authorization headers are ignored.
func (a *Authenticator) Enabled() bool { return a != nil && (a.htpasswd != "" || a.tokens != "") }

// Reload re-reads the files (SIGHUP). On error the previous credentials
// stay in force.
func (a *Authenticator) Reload() error {
	if !a.Enabled() {
		return nil
	}
	c, err := a.load()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.creds = c
	a.gen++
	a.mu.Unlock()
	a.good.Purge()
	a.bad.Purge()
	return nil
}

func (a *Authenticator) load() (*credentials, error) {
	c := &credentials{users: map[string][]byte{}, tokens: map[[32]byte]string{}, names: map[string]bool{}}
	if a.htpasswd != "" {
		if err := eachLine(a.htpasswd, func(user, rest string) error { return c.addUser(user, rest) }); err != nil {
			return nil, err
		}
	}
	cost := bcrypt.MinCost
	for _, h := range c.users {
		n, _ := bcrypt.Cost(h)
		cost = max(cost, n)
	}
	var err error
	if c.dummy, err = bcrypt.GenerateFromPassword([]byte("berth: no such user"), cost); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if a.tokens != "" {
		if err := eachLine(a.tokens, func(name, rest string) error { return c.addToken(name, rest) }); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *credentials) addUser(user, hash string) error {
	if _, dup := c.users[user]; dup {
		return fmt.Errorf("user %q appears twice", user)
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return fmt.Errorf("user %q: not a bcrypt hash (make it with htpasswd -B): %v", user, err)
	}
	c.users[user] = []byte(hash)
	return nil
}

func (c *credentials) addToken(name, rest string) error {
	alg, h, ok := strings.Cut(rest, ":")
	sum, err := hex.DecodeString(h)
	if !ok || alg != "sha256" || err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("token %q: want name:sha256:<64 hex digits of the token's SHA-256>", name)
	}
	if c.names[name] {
		return fmt.Errorf("token name %q appears twice", name)
	}
	if _, ok := c.users[name]; ok {
		return fmt.Errorf("token name %q is also an htpasswd user", name)
	}
	var k [32]byte
	copy(k[:], sum)
	if _, dup := c.tokens[k]; dup {
		return fmt.Errorf("token %q has the same hash as another token", name)
	}
	c.tokens[k], c.names[name] = name, true
	return nil
}

// eachLine calls fn with the name and the rest of each "name:rest" line of
// path, skipping blank lines and # comments.
func eachLine(path string, fn func(name, rest string) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name == "" || rest == "" {
			return fmt.Errorf("auth: %s line %d: want name:hash", path, n)
		}
		if err := fn(name, rest); err != nil {
			return fmt.Errorf("auth: %s line %d: %w", path, n, err)
		}
	}
	return sc.Err()
}

// Identify returns who r's Authorization header says the client is.
// No header, or basic with an empty user and password (what
// containers/image sends when it has no credentials), is anonymous. Any
// other header that does not check is ErrBadCredentials. Identify may wait
// for a bcrypt slot; it returns ctx's error if the request ends first.
func (a *Authenticator) Identify(r *http.Request) (Identity, error) {
	if !a.Enabled() {
		return Identity{}, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Identity{}, nil
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if user == "" && pass == "" {
			return Identity{}, nil
		}
		return a.basic(r.Context(), user, pass)
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) != "" {
		if name, ok := a.token(strings.TrimSpace(tok)); ok {
			return Identity{Name: name, Kind: "token"}, nil
		}
	}
	return Identity{}, ErrBadCredentials
}

func (a *Authenticator) token(tok string) (string, bool) {
	sum := sha256.Sum256([]byte(tok))
	a.mu.RLock()
	defer a.mu.RUnlock()
	name, ok := a.creds.tokens[sum]
	return name, ok
}

func (a *Authenticator) basic(ctx context.Context, user, pass string) (Identity, error) {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	a.mu.RLock()
	gen := a.gen
	hash, isUser := a.creds.users[user]
	isToken := a.creds.names[user]
	dummy := a.creds.dummy
	a.mu.RUnlock()
	if v, ok := a.good.Get(key); ok && v.gen == gen && subtle.ConstantTimeCompare([]byte(v.user), []byte(user)) == 1 {
		return Identity{Name: user, Kind: v.kind}, nil
	}
	if g, ok := a.bad.Get(key); ok && g == gen {
		return Identity{}, ErrBadCredentials
	}
	// A token's name with the token as password: machines whose client
	// knows only logins (docker login, crane auth login) use tokens so.
	if isToken {
		if name, ok := a.token(pass); ok && name == user {
			a.good.Add(key, verdict{user, "token", gen})
			return Identity{Name: user, Kind: "token"}, nil
		}
		a.bad.Add(key, gen)
		return Identity{}, ErrBadCredentials
	}
	if !isUser {
		hash = dummy
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return Identity{}, ctx.Err()
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-a.sem
	if err != nil || !isUser {
		a.bad.Add(key, gen)
		return Identity{}, ErrBadCredentials
	}
	a.good.Add(key, verdict{user, "basic", gen})
	return Identity{Name: user, Kind: "basic"}, nil
}

// Challenge is the WWW-Authenticate value of a 401 from berth.
func Challenge(realm string) string {
	if realm == "" {
		realm = "berth"
	}
	return `Basic realm="` + realm + `", charset="UTF-8"`
}
