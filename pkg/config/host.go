package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// registryHost is distribution/reference's grammar of the registry part of
// an image reference (a host name, an IPv4 address or a bracketed IPv6
// address, with an optional port), anchored: the one host grammar of the
// config, for registry names, listen addresses and peers alike.
var registryHost = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)

// validHost reports whether host, without a port, is an IP address or a
// host name (labels of letters, digits and inner hyphens, at most 253
// characters). Case is the caller's rule: DNS ignores it, berth's routing
// by registry name does not.
func validHost(host string) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	return len(host) <= 253 && !strings.ContainsAny(host, ":[]") && registryHost.MatchString(host)
}

// CheckRegistryName reports whether name is a registry name as clients
// write it: a lowercase host name or IP address, with an optional port
// (docker.io, 127.0.0.1:5000, [::1]:5000), in distribution/reference's
// grammar. The name is matched as written (ns=, hosts.toml directories,
// credential keys), so upper case is refused rather than folded.
func CheckRegistryName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if !registryHost.MatchString(name) {
		return fmt.Errorf("%q is not a lowercase host name or IP address with an optional port", name)
	}
	if lower := strings.ToLower(name); lower != name {
		return fmt.Errorf("%q is not a lowercase host name or IP address with an optional port (clients write %q)", name, lower)
	}
	host, port := name, ""
	if h, pt, err := net.SplitHostPort(name); err == nil {
		host, port = h, pt
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: invalid port %q", name, port)
		}
	}
	if strings.HasPrefix(name, "[") && port == "" {
		return fmt.Errorf("%q: an IPv6 address takes a port: [::1]:5000", name)
	}
	if !validHost(host) {
		return fmt.Errorf("%q is not a lowercase host name or IP address with an optional port", name)
	}
	return nil
}

// checkHostPort checks a listening address: host:port where host may be
// empty (all interfaces) and port may be 0 (chosen by the system).
func checkHostPort(addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: invalid port %q", addr, port)
	}
	if host == "" {
		if needHost {
			return fmt.Errorf("%q has no host", addr)
		}
		return nil
	}
	if !validHost(strings.TrimSuffix(host, ".")) {
		return fmt.Errorf("%q: invalid host %q", addr, host)
	}
	return nil
}

// checkAdvertise checks an address other nodes dial: a host and a port.
func checkAdvertise(addr string) error {
	if err := checkHostPort(addr, true); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: peers cannot reach an unspecified address; advertise this node's own address", addr)
	}
	if port == "0" {
		return fmt.Errorf("%q: peers need a real port", addr)
	}
	return nil
}

// checkJoin checks a seed: host or host:port, an address or a DNS name.
func checkJoin(s string) error {
	if strings.Contains(s, "://") {
		return fmt.Errorf("%q: want host or host:port, not a URL", s)
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return checkHostPort(s, true)
	}
	if !validHost(strings.TrimSuffix(s, ".")) {
		return fmt.Errorf("%q is not a host or host:port", s)
	}
	return nil
}
