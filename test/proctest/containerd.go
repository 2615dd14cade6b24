package proctest

import (
	"fmt"
	"strings"
)

// ContainerdConfig is a containerd config.toml (format version 2 for 1.6,
// 3 for 2.x) that keeps the daemon under {{dir}} (the caller replaces it
// with a directory of its own): root, state, its grpc and ttrpc sockets
// and opt, no debug or metrics listener. The disabled plugins are off;
// extra (more plugin sections) follows as it is.
func ContainerdConfig(version int, disabled []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\nroot = \"{{dir}}/root\"\nstate = \"{{dir}}/state\"\n", version)
	if len(disabled) > 0 {
		fmt.Fprintf(&b, "disabled_plugins = [\"%s\"]\n", strings.Join(disabled, `", "`))
	}
	b.WriteString(`[grpc]
  address = "{{dir}}/c.sock"
[ttrpc]
  address = "{{dir}}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{{dir}}/opt"
`)
	return b.String() + extra
}

// Containerd16Config is containerd 1.6's config for a pull through
// hosts.toml: ContainerdConfig with the CRI plugin off.
var Containerd16Config = ContainerdConfig(2, []string{"io.containerd.grpc.v1.cri"}, "")

// Containerd2Config is containerd 2.x's: as 1.6's, with NRI and the CRI
// plugins off, and the transfer service fetching one layer as parallel
// 8 MiB Range requests (concurrent_layer_fetch_buffer).
var Containerd2Config = ContainerdConfig(3, []string{"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"}, `[plugins."io.containerd.transfer.v1.local"]
  max_concurrent_downloads = 4
  concurrent_layer_fetch_buffer = 8388608
`)
