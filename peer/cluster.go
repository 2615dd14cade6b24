// Package peer owns the cluster: membership over memberlist gossip,
// rendezvous ranking of the live nodes for each digest or tag, and fetching
// from peers over the ordinary registry API with an authenticated marker
// (see Header) that says who asks (an oci.Via). A Cluster is a blob and
// manifest source for pkg/mirror: any error from it means "go upstream".
package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/hashicorp/memberlist"
)

// Config configures a Cluster. Only Bind and Advertise are required; every
// zero duration means its default.
type Config struct {
	NodeName  string        // unique in the cluster; "" means the host name
	Bind      string        // gossip address host:port (TCP and UDP); port 0 picks a free port
	Advertise string        // HTTP host:port of this node's registry API; an empty or unspecified host means the gossip IP
	Join      []string      // seeds: host:port or host (then Bind's port); DNS names are re-resolved every RejoinInterval
	Secret    []byte        // cluster secret (the secret file's contents): gossip encryption and request markers
	Timeout   time.Duration // time to a peer's first response (a 1xx counts) when asking for a blob; 0 means the config default (peers.timeout)
	AskNext   int           // ranked nodes asked in holder mode when the relay plan says upstream; 0 means the config default (peers.askNext), negative means none
	Fanout    int           // children per node in a blob's relay tree (see Plan); a node serves at most twice this many copies of a blob at once; 0 means the config default (peers.fanout)
	// StripeMin is the smallest stripe: a blob of at least twice this is
	// fetched as stripes, each down its own relay tree (see Plan); 0 means
	// the config default (peers.stripeSize), negative stripes nothing.
	StripeMin int64

	// RejoinInterval is how often seeds are re-resolved and joined; 0 (or
	// negative) joins only until a first join succeeds, as the config's 0
	// does. The default interval is the config's (peers.rejoinInterval).
	RejoinInterval time.Duration
	// LocalTags turns peer tag resolution off: ResolveTag fails at once
	// with ErrNoPeer, so this node asks upstream itself. On (false), a tag's
	// owner is trusted to say which digest it names.
	LocalTags bool
	// AllowForeignAdvertise accepts a member whose advertised HTTP host
	// differs from the address its gossip comes from. Off (false), such a
	// member is left out: a member could otherwise point this node's peer
	// requests at any address.
	AllowForeignAdvertise bool
	Logger                *slog.Logger // nil discards
	Metrics               *metrics.Metrics

	OwnerTimeout  time.Duration // time to the owner's first response for a manifest or tag (it may go upstream first); 0 means 3s
	HeaderTimeout time.Duration // after a first (1xx) response, time to the final headers; 0 means 30s
	IdleTimeout   time.Duration // a Read of a peer's body blocked this long fails, a stall of the peer on that blob (see stalled); 0 means the config default (peers.idleTimeout)
	SuspectFor    time.Duration // how long a peer that lied or refused connections is skipped (and a blob's stalls are remembered); 0 means 30s
	Gossip        Gossip        // membership timing
}

// Gossip tunes memberlist's failure detection. The defaults are
// memberlist's LAN settings: a dead node is dropped within a few seconds.
// Tests shorten them.
type Gossip struct {
	ProbeInterval    time.Duration // 0 means 1s
	ProbeTimeout     time.Duration // 0 means 500ms
	SuspicionMult    int           // 0 means 4
	GossipInterval   time.Duration // 0 means 200ms
	PushPullInterval time.Duration // 0 means 30s
	TCPTimeout       time.Duration // 0 means 10s
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defaults := config.Defaults().Peers
	def(&c.Timeout, defaults.Timeout.D())
	def(&c.OwnerTimeout, 3*time.Second)
	def(&c.HeaderTimeout, 30*time.Second)
	def(&c.IdleTimeout, defaults.IdleTimeout.D())
	def(&c.SuspectFor, 30*time.Second)
	def(&c.Gossip.ProbeInterval, time.Second)
	def(&c.Gossip.ProbeTimeout, 500*time.Millisecond)
	def(&c.Gossip.GossipInterval, 200*time.Millisecond)
	def(&c.Gossip.PushPullInterval, 30*time.Second)
	def(&c.Gossip.TCPTimeout, 10*time.Second)
	if c.Gossip.SuspicionMult <= 0 {
		c.Gossip.SuspicionMult = 4
	}
	if c.Fanout <= 0 {
		c.Fanout = defaults.Fanout
	}
	if c.StripeMin == 0 {
		c.StripeMin = DefaultStripeMin
	}
	if c.AskNext == 0 {
		c.AskNext = defaults.AskNext
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
}

// Errors of the peer methods besides transport and status errors. Any
// error means "go upstream".
var (
	ErrNoPeer    = errors.New("no peer could serve")
	ErrSelfOwner = errors.New("this node owns the key")
)

// Cluster is this node's view of the cluster. Its methods are safe for
// concurrent use. A node alone has no Cluster: pkg/mirror's NoPeers is the
// one "no peers" source. Only the lifecycle methods (Members, Ready,
// NameConflict, Close) accept a nil *Cluster, so the server need not test
// for one.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	keys   keys
	sign   signer
	tr     *http.Transport
	client *http.Client

	selfMu sync.Mutex // guards self (its HTTP address is fixed up after start)
	self   member

	mu       sync.Mutex            // guards members, suspects and slow
	members  map[string]member     // live nodes besides this one, by name
	suspects map[string]time.Time  // peer name -> skipped until
	slow     map[slowKey]*slowMark // a peer's stalls in a row on one blob

	relays relays // copies of blobs being served to peers

	joined       atomic.Bool
	conflict     atomic.Pointer[nameConflict] // the last node seen using this node's name
	joinAttempts atomic.Int64                 // tests wait on it
	stop         context.CancelFunc
	done         chan struct{} // closed when the join loop ends
	closeOnce    sync.Once
	closeErr     error
}

// Start brings up memberlist on cfg.Bind and returns at once; seeds are
// joined in the background, again every RejoinInterval, until Close or
// until ctx ends. Errors are configuration and bind errors.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg.setDefaults()
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.NodeName = h
	}
	if strings.ContainsAny(cfg.NodeName, ", \t\r\n") {
		return nil, fmt.Errorf("node name %q: must not contain commas or white space", cfg.NodeName)
	}
	if cfg.Advertise == "" {
		return nil, errors.New("peer advertise address: required")
	}
	if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil {
		return nil, fmt.Errorf("peer advertise address %q: %w", cfg.Advertise, err)
	}
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "peer", "node", cfg.NodeName),
		keys:     deriveKeys(cfg.Secret),
		self:     member{Name: cfg.NodeName, HTTP: cfg.Advertise},
		members:  map[string]member{},
		suspects: map[string]time.Time{},
		slow:     map[slowKey]*slowMark{},
		done:     make(chan struct{}),
	}
	c.sign = signer{key: c.keys.marker, node: cfg.NodeName, now: time.Now}
	// Each request's own first-response timer bounds its dial (ask): the
	// longest of them is a relay source's (relayTimeout).
	c.tr, c.client = newClient(c.relayTimeout())
	if len(bytesTrim(cfg.Secret)) == 0 {
		c.log.Warn("no peer secret: gossip is not encrypted and peer markers can be forged")
	}
	mlc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	if c.ml, err = memberlist.Create(mlc); err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	if err := c.fixAdvertise(); err != nil {
		_ = c.ml.Shutdown()
		return nil, err
	}
	c.log.Info("gossip started", "bind", c.GossipAddr(), "advertise", c.selfMember().HTTP, "seeds", cfg.Join)
	lctx, stop := context.WithCancel(ctx)
	c.stop = stop
	go c.joinLoop(lctx)
	return c, nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	host, port, err := net.SplitHostPort(c.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("peer bind address %q: %w", c.cfg.Bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("peer bind address %q: bad port", c.cfg.Bind)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mlc := memberlist.DefaultLANConfig()
	mlc.Name = c.cfg.NodeName
	mlc.BindAddr, mlc.BindPort, mlc.AdvertisePort = host, p, p
	g := c.cfg.Gossip
	mlc.ProbeInterval, mlc.ProbeTimeout, mlc.SuspicionMult = g.ProbeInterval, g.ProbeTimeout, g.SuspicionMult
	mlc.GossipInterval, mlc.PushPullInterval, mlc.TCPTimeout = g.GossipInterval, g.PushPullInterval, g.TCPTimeout
	mlc.GossipToTheDeadTime = g.PushPullInterval
	if len(bytesTrim(c.cfg.Secret)) > 0 {
		mlc.SecretKey = c.keys.gossip
	}
	mlc.Delegate = delegate{c}
	mlc.Events = events{c}
	mlc.Conflict = events{c}
	mlc.Logger = newStdLogger(c.cfg.Logger)
	return mlc, nil
}

// fixAdvertise replaces an unspecified HTTP host by the gossip IP.
func (c *Cluster) fixAdvertise() error {
	host, port, _ := net.SplitHostPort(c.cfg.Advertise)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return nil
	}
	c.selfMu.Lock()
	c.self.HTTP = net.JoinHostPort(c.ml.LocalNode().Addr.String(), port)
	c.selfMu.Unlock()
	if err := c.ml.UpdateNode(c.cfg.Gossip.TCPTimeout); err != nil {
		return fmt.Errorf("advertise %s: %w", c.self.HTTP, err)
	}
	return nil
}

func (c *Cluster) selfMember() member {
	c.selfMu.Lock()
	defer c.selfMu.Unlock()
	return c.self
}

// GossipAddr returns the address other nodes join this one at (ip:port).
func (c *Cluster) GossipAddr() string {
	return c.ml.LocalNode().Address()
}

// Name returns this node's name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// Members returns the live nodes besides this one: name -> HTTP address.
func (c *Cluster) Members() map[string]string {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.members))
	for n, m := range c.members {
		out[n] = m.HTTP
	}
	return out
}

// Ready reports whether this node has joined a seed at least once, or has
// no seeds to join (alone by configuration, or the seeds name only itself).
// It does not block.
func (c *Cluster) Ready() bool {
	if c.NameConflict() != "" {
		return false
	}
	if c == nil || len(c.cfg.Join) == 0 || c.joined.Load() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members) > 0
}

// nameConflict is another node that gossips this node's name.
type nameConflict struct {
	other string // its gossip address
	at    time.Time
}

// NameConflict returns the gossip address of another node that used this
// node's name within the last two re-join intervals (at least a minute), or
// "". Two nodes of one name cannot peer: memberlist keeps one of them.
func (c *Cluster) NameConflict() string {
	if c == nil {
		return ""
	}
	nc := c.conflict.Load()
	if nc == nil || time.Since(nc.at) > max(2*c.cfg.RejoinInterval, time.Minute) {
		return ""
	}
	return nc.other
}

// Close leaves the cluster, waiting up to timeout for the leave to reach a
// member, then stops gossip. Other nodes drop this one at once instead of
// detecting it dead. Close is idempotent; fetches under way end with errors
// only if they still need the gossip layer (they do not: bodies keep
// streaming).
func (c *Cluster) Close(timeout time.Duration) error {
	if c == nil {
		return nil
	}
	c.closeOnce.Do(func() {
		c.stop()
		select {
		case <-c.done:
		case <-time.After(timeout):
		}
		leaveErr := c.ml.Leave(timeout)
		c.closeErr = errors.Join(leaveErr, c.ml.Shutdown())
		c.tr.CloseIdleConnections()
		c.setPeersGauge(0)
	})
	return c.closeErr
}

// kill stops gossip without leaving, as a crash would (tests).
func (c *Cluster) kill() {
	c.closeOnce.Do(func() {
		c.stop()
		<-c.done
		c.closeErr = c.ml.Shutdown()
		c.tr.CloseIdleConnections()
	})
}

// live returns this node and the live members, in no particular order.
func (c *Cluster) live() []member {
	self := c.selfMember()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]member, 0, len(c.members)+1)
	out = append(out, self)
	for _, m := range c.members {
		out = append(out, m)
	}
	return out
}

// suspect skips a peer for SuspectFor.
func (c *Cluster) suspect(name string, why error) {
	c.mu.Lock()
	c.suspects[name] = time.Now().Add(c.cfg.SuspectFor)
	c.mu.Unlock()
	c.log.Warn("peer suspected", "peer", name, "for", c.cfg.SuspectFor, "err", why)
}

func (c *Cluster) suspected(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.suspects[name]
	if ok && time.Now().After(until) {
		delete(c.suspects, name)
		return false
	}
	return ok
}

// slowLimit is how many times in a row a peer may stall on a blob (send
// nothing of it for IdleTimeout, or no answer in time) before this node
// passes it over for that blob (see stalled, askAgain).
const slowLimit = 3

// slowKey is one peer and one blob (its digest).
type slowKey struct{ peer, key string }

// slowMark counts a peer's stalls in a row on one blob.
type slowMark struct {
	stalls int
	until  time.Time // forgotten after
}

// stalled records that peer sent nothing of blob key for IdleTimeout. A
// peer that stalls is slow, not dead: it answered, so it is fetching the
// blob itself (a relay parent waits on its own source, which a loaded
// machine or upstream can make slow), and the bytes it has not sent yet
// would come from the upstream a second time if this node went there
// instead. So a stall neither suspects the peer for its other blobs nor
// passes it over for this one: it is asked again, at the byte reached,
// until it stalled slowLimit times in a row without a byte in between
// (stuck, not slow). A dead peer is no stall: its connections break or
// are refused (suspect), or gossip drops it.
func (c *Cluster) stalled(peer, key string, why error) {
	c.mu.Lock()
	if len(c.slow) >= 256 { // forget the old marks of blobs not asked again
		for k, m := range c.slow {
			if time.Now().After(m.until) {
				delete(c.slow, k)
			}
		}
	}
	m := c.slow[slowKey{peer, key}]
	if m == nil || time.Now().After(m.until) {
		m = &slowMark{}
		c.slow[slowKey{peer, key}] = m
	}
	m.stalls++
	m.until = time.Now().Add(c.cfg.SuspectFor)
	stalls := m.stalls
	c.mu.Unlock()
	if stalls >= slowLimit {
		c.log.Warn("peer passed over for a blob", "peer", peer, "digest", key, "stalls", stalls, "for", c.cfg.SuspectFor, "err", why)
		return
	}
	c.log.Info("peer slow, asked again", "peer", peer, "digest", key, "stalls", stalls, "err", why)
}

// askAgain reports whether a relay source that failed with err is to be
// asked again for blob key rather than passed over for the next source
// (and at last the upstream): it sent no answer in time (a stall before
// the body, counted as one), is still a live member, and has not stalled
// slowLimit times in a row on the blob. A node a loaded machine does not
// run accepts the connection (the kernel does) and answers late; a dead
// one refuses it or leaves the membership.
func (c *Cluster) askAgain(peer, key string, err error) bool {
	if !errors.Is(err, errNoAnswer) || !c.isMember(peer) {
		return false
	}
	c.stalled(peer, key, err)
	return !c.passOver(peer, key)
}

// isMember reports whether peer is a live member now.
func (c *Cluster) isMember(peer string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.members[peer]
	return ok
}

// progressed forgets peer's stalls on blob key: it sent a byte.
func (c *Cluster) progressed(peer, key string) {
	c.mu.Lock()
	delete(c.slow, slowKey{peer, key})
	c.mu.Unlock()
}

// passOver reports whether this node skips peer for key: the peer is
// suspected (refused connections or lied), or stalled slowLimit times in
// a row on it.
func (c *Cluster) passOver(peer, key string) bool {
	if c.suspected(peer) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.slow[slowKey{peer, key}]
	if m != nil && time.Now().After(m.until) {
		delete(c.slow, slowKey{peer, key})
		return false
	}
	return m != nil && m.stalls >= slowLimit
}

func (c *Cluster) setPeersGauge(n int) {
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.Peers.Set(float64(n))
	}
}
