package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"
)

// prepareDirCmd is `berth prepare-dir`: create a directory and hand it to
// berth's non-root user. The chart runs it as root, with CAP_CHOWN only, in an
// init container before berth starts on a hostPath cache, which the kubelet
// creates owned by root. It needs nothing but the berth image, so a node can
// start berth without pulling any other image through the mirror it is
// about to provide.
func prepareDirCmd() *cobra.Command {
	var uid, gid int
	mode := octalMode(0o750)
	cmd := &cobra.Command{
		Use:   "prepare-dir DIR...",
		Short: "Create directories and give them to berth's user (top level only)",
		Long: `Create each DIR, set its mode (--mode, octal, 0750 by default) and then its
owner (--uid, --gid). Only the directory itself is changed, never its contents:
a large cache is not walked at every start. The chart runs it as root with
CAP_CHOWN only, in an init container, on the hostPath cache that the kubelet
creates owned by root.`,
		Example: "  berth prepare-dir --uid 65532 --gid 65532 /var/lib/berth",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			var errs []error
			for _, d := range dirs {
				if err := prepareDir(d, uid, gid, os.FileMode(mode)); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "prepared %s (%d:%d %#o)\n", d, uid, gid, mode)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().IntVar(&uid, "uid", 65532, "owner user id")
	cmd.Flags().IntVar(&gid, "gid", 65532, "owner group id")
	cmd.Flags().Var(&mode, "mode", "directory permission bits, in octal")
	return cmd
}

// prepareDir chmods before it chowns: once the directory is no longer
// root's, root would need CAP_FOWNER to chmod it.
func prepareDir(dir string, uid, gid int, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	if err := os.Chmod(dir, mode.Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	return nil
}

// octalMode is a permission flag read and shown in octal (0750), as chmod
// takes it, not in decimal.
type octalMode uint32

func (m *octalMode) String() string { return fmt.Sprintf("%#o", uint32(*m)) }
func (m *octalMode) Type() string   { return "octal" }

func (m *octalMode) Set(s string) error {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v&^0o7777 != 0 {
		return fmt.Errorf("%q is not an octal mode such as 0750", s)
	}
	*m = octalMode(v)
	return nil
}
