package executor

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSymlinkRace: while one goroutine keeps swapping a sandbox directory
// for a symlink to a directory outside the sandbox (and back), writes,
// reads and deletes through that directory race with it. os.Root resolves
// every path component inside the root, so no write ever lands outside,
// no read ever returns the outside secret, and nothing outside is deleted.
func TestSymlinkRace(t *testing.T) {
	w := newWorld(t)
	if _, err := w.sb.write(t.Context(), acme, "d/seed.txt", "seed"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(w.sb.dir, "acme", "d")
	const rounds = 2000
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker: d is a directory one moment, a symlink out the next
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			_ = os.RemoveAll(dir)
			if i%2 == 0 {
				_ = os.Symlink(w.outside, dir)
			} else {
				_ = os.Mkdir(dir, 0o750)
			}
		}
	}()
	var leaked, written atomic.Int64
	var workers sync.WaitGroup
	for g := range 3 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range rounds {
				switch (i + g) % 3 {
				case 0:
					if _, err := w.sb.write(t.Context(), acme, "d/secret.txt", "pwned"); err == nil {
						written.Add(1)
					}
				case 1:
					if out, err := w.sb.read(t.Context(), acme, "d/secret.txt"); err == nil && out["content"] == "secret" {
						leaked.Add(1)
					}
				default:
					_, _ = w.sb.remove(t.Context(), acme, "d/secret.txt")
				}
			}
		}()
	}
	workers.Wait()
	stop.Store(true)
	wg.Wait()
	if leaked.Load() != 0 {
		t.Fatalf("%d reads returned the secret from outside the sandbox", leaked.Load())
	}
	w.untouched(t)
	t.Logf("%d racing writes landed (inside the sandbox), none outside", written.Load())
}
