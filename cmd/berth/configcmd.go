package main

import (
	"fmt"
	"os"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/spf13/cobra"
)

func configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Print or check configuration files"}
	c.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the embedded default configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.DefaultYAML())
			return err
		},
	}, validateCmd())
	return c
}

func validateCmd() *cobra.Command {
	var noEnv bool
	c := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file, with BERTH_* environment variables applied as serve does, and report every problem",
		Long: "Check a configuration file as `berth serve --config FILE` would run it: the file, then the BERTH_*\n" +
			"environment variables (settings and registry credentials), then every check serve makes. Every problem\n" +
			"is reported in one run, each with its line, field path or variable. BERTH_* variables that name no\n" +
			"setting are reported as warnings. --no-env checks the file alone.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env := os.Environ()
			if noEnv {
				env = nil
			}
			cfg, err := config.Load(args[0])
			if err == nil {
				err = config.Resolve(cfg, env, nil)
			}
			for _, name := range config.UnknownEnv(env) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: environment variable %s names no setting\n", name)
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return fmt.Errorf("%s is not valid", args[0])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&noEnv, "no-env", false, "ignore BERTH_* environment variables")
	return c
}

// loadConfig reads the file (or the embedded default), then BERTH_* env. It
// does not validate: see config.Resolve.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := loadFile(path)
	if err != nil {
		return nil, err
	}
	return cfg, config.ApplyEnv(cfg, os.Environ())
}

// loadFile reads the file, or the embedded default when path is "".
func loadFile(path string) (*config.Config, error) {
	if path == "" {
		return config.Default()
	}
	return config.Load(path)
}
