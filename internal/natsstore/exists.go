package natsstore

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// ErrNoStore is returned by CheckExists when the configuration names no
// ExoArmur store.
var ErrNoStore = errors.New("no store")

// CheckExists reports, creating nothing, whether cfg names an existing
// ExoArmur store: it is for the commands that only read one (audit verify
// and export, replay, keys list). Open cannot tell, because it creates
// what is missing: the data dir, its lock file, the server's JetStream
// directory, every stream and bucket. A reading command pointed at a
// wrong or empty directory would leave a new empty store behind and report
// on it, e.g. "does not verify" for a chain that was never written.
//
// With DataDir, the check is on the directory layout the NATS server
// writes for JetStream file storage: DataDir/jetstream/<account>/streams/
// <stream>/meta.inf for each stream. Every Open creates the audit stream
// (tenant.AuditStream) first, so every data dir an ExoArmur command has
// opened holds DataDir/jetstream/$G/streams/EXOARMUR_AUDIT/meta.inf (the
// embedded server runs in the global account, $G; any account is accepted,
// so the data dir of a stopped `exoarmur nats` passes too). Nothing is
// opened or locked: a data dir a running server holds passes, and Open
// then reports it in use.
//
// With NATSURL, the server is asked over one connection, bounded by
// timeout, whether the audit stream exists; no stream is created.
func CheckExists(ctx context.Context, cfg Config, timeout time.Duration) error {
	if cfg.NATSURL == "" {
		return checkDataDir(cfg.DataDir)
	}
	nc, js, err := dial(ctx, cfg.NATSURL, cmpOr(cfg.Name, "exoarmur-check"), timeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := js.Stream(ctx, tenant.AuditStream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w at %s: the NATS server holds no ExoArmur audit stream (%s)", ErrNoStore, redact(cfg.NATSURL), tenant.AuditStream)
		}
		return fmt.Errorf("nats %s: %w: %w", redact(cfg.NATSURL), ErrUnavailable, err)
	}
	return nil
}

func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w at %s: the directory does not exist", ErrNoStore, dir)
	case err != nil:
		return fmt.Errorf("data dir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%w at %s: not a directory", ErrNoStore, dir)
	}
	metas, err := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", tenant.AuditStream, "meta.inf"))
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if len(metas) == 0 {
		return fmt.Errorf("%w at %s: the directory holds no JetStream store with ExoArmur's audit stream", ErrNoStore, dir)
	}
	return nil
}

// Probe connects to the NATS server at url, bounded by timeout, and checks
// that JetStream answers (check-config); it creates nothing.
func Probe(ctx context.Context, url string, timeout time.Duration) error {
	nc, js, err := dial(ctx, url, "exoarmur-check-config", timeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("nats %s: JetStream does not answer: %w: %w", redact(url), ErrUnavailable, err)
	}
	return nil
}

// dial is one connection attempt to url, bounded by timeout, without
// reconnects.
func dial(ctx context.Context, url, name string, timeout time.Duration) (*nats.Conn, jetstream.JetStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(timeout), nats.NoReconnect(), nats.RetryOnFailedConnect(false))
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w: %w", redact(url), ErrUnavailable, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// redact hides the password of each of a NATS URL list's URLs, for errors.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
