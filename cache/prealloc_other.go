//go:build !linux

package cache

import (
	"errors"
	"os"
)

// preallocate is not done here: writes allocate as they go.
func preallocate(*os.File, int64, int64) error { return errors.ErrUnsupported }
