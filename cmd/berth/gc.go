package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/spf13/cobra"
)

func gcCmd() *cobra.Command {
	var (
		sf             storeFlags
		dryRun, asJSON bool
		minAge         time.Duration
	)
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove content no cached tag references and nobody used for a while",
		Long: "Remove content that no cached tag's manifest tree (index, manifests, configs, layers,\n" +
			"referrers) references, that no pin reaches (berth pin, berth preload), and that was not\n" +
			"used for --min-age (default: the config's cache.gcMinAge; --min-age 0s removes every\n" +
			"unreferenced blob now). It opens the store, so the server must be stopped; a running\n" +
			"server does the same every cache.gcInterval.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("min-age") {
				cfg, err := loadConfig(sf.config)
				if err != nil {
					return err
				}
				minAge = cfg.Cache.GCMinAge.D()
			}
			s, err := sf.open("stop it first, or let its periodic gc run")
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.GC(cmd.Context(), cache.GCOptions{MinAge: minAge, DryRun: dryRun})
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, d := range rep.Removed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %d blobs (%d bytes); %d referenced, %d of them pinned\n", verb, len(rep.Removed), rep.Bytes, rep.Referenced, rep.Pinned)
			return nil
		},
	}
	sf.add(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be removed")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().DurationVar(&minAge, "min-age", 0, "remove only content unused this long; 0s means now (default: the config's cache.gcMinAge)")
	return c
}
