package cache

import (
	"os"
	"syscall"
)

// preallocate reserves the blocks of [off, off+n) of f without changing
// its size (FALLOC_FL_KEEP_SIZE), so writes into them allocate nothing.
func preallocate(f *os.File, off, n int64) error {
	const keepSize = 0x1 // FALLOC_FL_KEEP_SIZE
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), keepSize, off, n)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}
