// Package executor holds ExoArmur's executors: the implementations of the
// executor kinds that action registrations declare (internal/action).
// sandbox-read, sandbox-write and sandbox-delete are confined to a
// per-tenant sandbox with os.Root; http-request is restricted to a host
// allowlist. New binds one executor to each registration of a registry.
// Each Run requires a *gate.Permit for its action type, which only the gate
// mints after a recorded ALLOW decision and an idempotency claim; a zero or
// nil permit is refused. Only internal/app (the wiring) imports this
// package, and a test enforces it.
package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
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

// Config configures the executors.
type Config struct {
	Actions          *action.Registry // the action types to run (default: action.Builtin())
	SandboxDir       string           // root of the per-tenant sandboxes
	Allowlist        []string         // hosts or host:port the http executors may reach
	HTTPTimeout      time.Duration    // whole-request timeout (default 10s)
	MaxResponseBytes int64            // http response body limit (default 1 MiB)
	MaxFileBytes     int64            // sandbox-read limit (default 1 MiB)
}

// Registry maps action types to executors.
type Registry struct {
	byAction map[string]gate.Executor
}

var _ gate.Executors = (*Registry)(nil)

// implementations maps each executor kind (internal/action) to the type
// that implements it; New binds a copy to every registration that declares
// the kind. tools/inventory reads this map to find each kind's Run.
var implementations = map[action.ExecutorKind]implementation{
	action.SandboxRead:   fsRead{},
	action.SandboxWrite:  fsWrite{},
	action.SandboxDelete: fsDelete{},
	action.HTTPRequest:   httpRequest{},
}

// implementation is an executor type; bind returns it configured for one
// registration.
type implementation interface {
	gate.Executor
	bind(r action.Registration, e *env) gate.Executor
}

// env is what the executors of a Registry share.
type env struct {
	sandbox *sandbox
	http    *httpClient
}

// New builds an executor for every registration of cfg.Actions. A
// registration whose executor kind has no implementation is an error.
func New(cfg Config) (*Registry, error) {
	if cfg.SandboxDir == "" {
		return nil, errors.New("executor: sandbox dir is required")
	}
	if cfg.Actions == nil {
		cfg.Actions = action.Builtin()
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
	e := &env{sandbox: &sandbox{dir: cfg.SandboxDir, maxFile: cfg.MaxFileBytes}, http: newHTTPClient(cfg)}
	list := cfg.Actions.List()
	r := &Registry{byAction: make(map[string]gate.Executor, len(list))}
	for _, reg := range list {
		impl, ok := implementations[reg.Executor.Kind]
		if !ok {
			return nil, fmt.Errorf("executor: action %q: executor kind %q has no implementation", reg.Type, reg.Executor.Kind)
		}
		r.byAction[reg.Type] = impl.bind(reg, e)
	}
	return r, nil
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
