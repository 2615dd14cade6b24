package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func verifyCmd() *cobra.Command {
	var (
		sf             storeFlags
		dryRun, asJSON bool
		workers        int
	)
	c := &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every blob in the store and remove those that do not match their digest",
		Long: "Re-hash every blob in the store (the full check start-up skips) and remove the files\n" +
			"that do not hash to their names, with their index entries. It opens the store, so the\n" +
			"server must be stopped. Exits non-zero when it found a bad file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := sf.open("stop it first")
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.Verify(cmd.Context(), workers, !dryRun)
			if err != nil {
				return err
			}
			if asJSON {
				json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "checked %d blobs (%d bytes), %d bad\n", rep.Checked, rep.Bytes, len(rep.Bad))
				for _, d := range rep.Bad {
					verb := "removed"
					if dryRun {
						verb = "bad"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, d)
				}
			}
			if len(rep.Bad) > 0 {
				return fmt.Errorf("%d blobs did not match their digest", len(rep.Bad))
			}
			return nil
		},
	}
	sf.add(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report bad files without removing them")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().IntVar(&workers, "workers", 2, "files hashed at once")
	return c
}
