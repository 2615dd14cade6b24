// Command berth is a pull-through caching OCI registry mirror. main is the
// one composition root: it alone reads flags, env and files, and wires the
// packages together.
package main

import (
	"fmt"
	"os"

	"github.com/berth-registry/berth/pkg/version"

	"github.com/spf13/cobra"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "berth:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "berth is a pull-through caching OCI registry mirror",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(serveCmd(), configCmd(), hostsTomlCmd(), clientConfigCmd(), prepareDirCmd(), lsCmd(), verifyCmd(), gcCmd(), pinCmd(), unpinCmd(), preloadCmd(), exportCmd(), importCmd(), versionCmd())
	return root
}
