package cache

import (
	"context"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"
)

// VerifyReport says what a full check of the store found.
type VerifyReport struct {
	Checked int             `json:"checked"` // files hashed
	Bytes   int64           `json:"bytes"`   // bytes hashed
	Bad     []digest.Digest `json:"bad"`     // files that do not hash to their name
	Removed bool            `json:"removed"` // whether the bad files were removed
}

// Verify re-hashes every committed file, with workers goroutines (0 means
// 2), and with remove drops the files that do not hash to their names,
// with their index entries. It reads the whole store: minutes on a large
// one. It may run while the store serves; ctx stops it.
func (s *Store) Verify(ctx context.Context, workers int, remove bool) (VerifyReport, error) {
	present, err := s.listBlobs()
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify: %w", err)
	}
	if workers <= 0 {
		workers = 2
	}
	work := make(chan digest.Digest)
	var (
		mu  sync.Mutex // guards rep
		rep = VerifyReport{Removed: remove}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				n, err := hashFile(present[d], d)
				mu.Lock()
				rep.Checked++
				rep.Bytes += n
				if err != nil {
					s.log.Warn("verify", "digest", d, "err", err)
					rep.Bad = append(rep.Bad, d)
				}
				mu.Unlock()
			}
		}()
	}
	for d := range present {
		select {
		case work <- d:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if remove && len(rep.Bad) > 0 {
		if _, err := s.removeBad(rep.Bad); err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
	}
	return rep, nil
}
