package hoststoml

import (
	"net"
	"regexp"
	"strings"
)

var bracketedHost = regexp.MustCompile(`^([a-z]+://)\[([^\]]*)\](.*)$`)

// UnbracketIPv4 turns http://[10.0.0.5]:5000 into http://10.0.0.5:5000 and
// leaves every other URL alone, so the chart can pass
// --mirror=http://[$(NODE_IP)]:5000 for IPv4 and IPv6 node addresses alike.
func UnbracketIPv4(s string) string {
	m := bracketedHost.FindStringSubmatch(s)
	if m == nil {
		return s
	}
	if ip := net.ParseIP(m[2]); ip != nil && ip.To4() != nil && !strings.Contains(m[2], ":") {
		return m[1] + m[2] + m[3]
	}
	return s
}
