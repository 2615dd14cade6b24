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
	}, &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file and report every error with its field path",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return fmt.Errorf("%s is not valid", args[0])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	})
	return c
}

// loadConfig reads the file (or the embedded default), then BERTH_* env.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		cfg, err := config.Default()
		if err != nil {
			return nil, err
		}
		return cfg, config.ApplyEnv(cfg, os.Environ())
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, config.ApplyEnv(cfg, os.Environ())
}
