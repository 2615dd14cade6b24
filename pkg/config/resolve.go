package config

import "errors"

// Resolve finishes a loaded configuration the way `berth serve` does and
// `berth config validate` checks it: BERTH_* variables from environ, then
// override (the command line's flags; nil for none), then the credential
// variables (which reach registries the flags added), then Validate and
// CheckFiles (the cluster secret's length). It does
// not stop at the first problem: every error of every step is reported,
// joined, so one run lists all there is to fix.
func Resolve(cfg *Config, environ []string, override func(*Config) error) error {
	errs := []error{ApplyEnv(cfg, environ)}
	if override != nil {
		errs = append(errs, override(cfg))
	}
	errs = append(errs, ApplyCredentialEnv(cfg, environ), cfg.Validate(), cfg.CheckFiles())
	return errors.Join(errs...)
}
