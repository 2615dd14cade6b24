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
		Long: "Remove content that no cached tag's manifest tree (index, manifests, configs, layers)\n" +
			"references, that is not pinned, and that was not used for --min-age. It opens the store,\n" +
			"so the server must be stopped; a running server does the same every cache.gcInterval.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			fmt.Fprintf(cmd.OutOrStdout(), "%s %d blobs (%d bytes); %d referenced\n", verb, len(rep.Removed), rep.Bytes, rep.Referenced)
			return nil
		},
	}
	sf.add(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be removed")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().DurationVar(&minAge, "min-age", 24*time.Hour, "remove only content unused this long")
	return c
}
