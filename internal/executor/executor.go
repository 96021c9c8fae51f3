// Package executor holds ExoArmur's built-in executors: fs.read, fs.write
// and fs.delete confined to a per-tenant sandbox with os.Root, and http.get
// and http.post restricted to a host allowlist. Each Run requires a
// *gate.Permit, which only the gate mints after a recorded ALLOW decision
// and an idempotency claim; a zero or nil permit is refused. Only
// internal/app (the wiring) imports this package, and a test enforces it.
package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/exoarmur/exoarmur/internal/gate"
)

// Errors callers and tests branch on.
var (
	ErrNoPermit         = errors.New("executor: no valid permit from the gate")
	ErrWrongAction      = errors.New("executor: permit is for another action")
	ErrPathEscape       = errors.New("path escapes the tenant sandbox")
	ErrTooLarge         = errors.New("file exceeds the size limit")
	ErrNotRegular       = errors.New("not a regular file")
	ErrHardLink         = errors.New("file has more than one hard link")
	ErrResponseTooLarge = errors.New("response exceeds the size limit")
	ErrHostNotAllowed   = errors.New("host is not on the allowlist")
)

// Config configures the built-in executors.
type Config struct {
	SandboxDir       string        // root of the per-tenant sandboxes
	Allowlist        []string      // hosts or host:port the http executors may reach
	HTTPTimeout      time.Duration // whole-request timeout (default 10s)
	MaxResponseBytes int64         // http response body limit (default 1 MiB)
	MaxFileBytes     int64         // fs.read limit (default 1 MiB)
}

// Registry maps action types to executors.
type Registry struct {
	byAction map[string]gate.Executor
}

var _ gate.Executors = (*Registry)(nil)

// New builds the registry of built-in executors.
func New(cfg Config) (*Registry, error) {
	if cfg.SandboxDir == "" {
		return nil, errors.New("executor: sandbox dir is required")
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = 10 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 20
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 1 << 20
	}
	sb := &sandbox{dir: cfg.SandboxDir, maxFile: cfg.MaxFileBytes}
	hc := newHTTPClient(cfg)
	return &Registry{byAction: map[string]gate.Executor{
		"fs.read":   fsRead{sb},
		"fs.write":  fsWrite{sb},
		"fs.delete": fsDelete{sb},
		"http.get":  httpGet{hc},
		"http.post": httpPost{hc},
	}}, nil
}

// Lookup returns the executor of an action type.
func (r *Registry) Lookup(action string) (gate.Executor, bool) {
	e, ok := r.byAction[action]
	return e, ok
}

// Close releases resources (none are held between runs today).
func (r *Registry) Close() error { return nil }

// check refuses a permit the gate did not mint, or one for another action.
func check(p *gate.Permit, action string) error {
	if !p.Valid() {
		return ErrNoPermit
	}
	if got := p.Intent().Action; got != action {
		return fmt.Errorf("%w: %s permit used for %s", ErrWrongAction, got, action)
	}
	return nil
}

func digest(b []byte) map[string]string {
	sum := sha256.Sum256(b)
	return map[string]string{"bytes": strconv.Itoa(len(b)), "sha256": hex.EncodeToString(sum[:])}
}
