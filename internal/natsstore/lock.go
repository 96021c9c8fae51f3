package natsstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrDataDirInUse is returned when another process holds the data dir.
var ErrDataDirInUse = errors.New("data dir is in use by another process")

// lockDataDir takes an exclusive advisory lock on dir/exoarmur.lock, so two
// embedded servers can never write one JetStream store. The kernel releases
// the lock when the process dies, including on kill -9.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "exoarmur.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("%s (held by pid %s; stop it, or point this command at its NATS with --nats-url): %w",
			dir, strings.TrimSpace(string(holder)), ErrDataDirInUse)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d\n", os.Getpid())
	}
	return f, nil
}
