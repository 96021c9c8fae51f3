// Package executor holds ExoArmur's executors: the implementations of the
// executor kinds that action registrations declare (internal/action).
// sandbox-read, sandbox-write and sandbox-delete are confined to a
// per-tenant sandbox with os.Root; http-request is restricted to a host
// allowlist; http-template (the operator's declared actions) sends what
// its registration renders, to an allowlisted host, with the declared
// secrets injected into its headers here and nowhere else (redacted from
// its output, no redirect followed); mcp-tool calls an upstream MCP
// server's tool through the caller it is given (internal/mcp), the
// arguments the operator saw, its result bounded and redacted. New binds
// one executor to each registration of a registry.
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
	"unicode/utf8"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// Errors callers and tests branch on.
var (
	ErrNoPermit       = errors.New("executor: no valid permit from the gate")
	ErrWrongAction    = errors.New("executor: permit is for another action")
	ErrPathEscape     = errors.New("path escapes the tenant sandbox")
	ErrTooLarge       = errors.New("file exceeds the size limit")
	ErrNotRegular     = errors.New("not a regular file")
	ErrHardLink       = errors.New("file has more than one hard link")
	ErrHostNotAllowed = errors.New("host is not on the allowlist")
)

// Config configures the executors.
type Config struct {
	Actions     *action.Registry // the action types to run (default: action.Builtin())
	SandboxDir  string           // root of the per-tenant sandboxes
	Allowlist   []string         // hosts or host:port the http executors may reach
	HTTPTimeout time.Duration    // whole-request timeout (default 10s)
	// MaxOutputBytes bounds an output, JSON-encoded (gate.OutputSize):
	// the store's record budget (gate.RecordBudget of its max_payload;
	// default that of gate.DefaultMaxRecord). fs.read and the http
	// executors read at most this much of a file or a response body and
	// cut what does not fit, marked truncated (cut).
	MaxOutputBytes int64
	MaxFileBytes   int64 // fs.write content limit (default 1 MiB)
	// MCP calls the upstream MCP servers' tools (executor kind
	// mcp-tool); nil when none are configured.
	MCP MCPCaller
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
	action.HTTPTemplate:  httpTemplate{},
	action.MCPTool:       mcpTool{},
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
	mcp     MCPCaller
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
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = gate.RecordBudget(gate.DefaultMaxRecord)
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 1 << 20
	}
	e := &env{sandbox: &sandbox{dir: cfg.SandboxDir, maxFile: cfg.MaxFileBytes, maxContent: contentBudget(cfg.MaxOutputBytes)}, http: newHTTPClient(cfg), mcp: cfg.MCP}
	list := cfg.Actions.List()
	r := &Registry{byAction: make(map[string]gate.Executor, len(list))}
	for _, reg := range list {
		impl, ok := implementations[reg.Executor.Kind]
		if !ok {
			return nil, fmt.Errorf("executor: action %q: executor kind %q has no implementation", reg.Type, reg.Executor.Kind)
		}
		ex := impl.bind(reg, e)
		if c, ok := ex.(interface{ check() error }); ok {
			if err := c.check(); err != nil {
				return nil, fmt.Errorf("executor: action %q: %w", reg.Type, err)
			}
		}
		r.byAction[reg.Type] = ex
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

// outputKeys is what an output's keys and small values (bytes, sha256,
// status, the truncation marker) may take beside its content or body.
const outputKeys = 1 << 10

// contentBudget is what the content of an output may take JSON-encoded
// (contract.JSONLen) when the whole output may take maxOutput.
func contentBudget(maxOutput int64) int64 { return max(maxOutput-outputKeys, 0) }

// cut is the output of content (under key), read (at most budget+1 bytes) from a
// source of size bytes (-1: unknown): its digest and the content, or, when
// the content takes more than budget JSON-encoded, the longest prefix that
// fits, its digest, and the marker: truncated, and the original size when
// known. A prefix never ends inside a character (a multi-byte character
// cut by the read is dropped).
func cut(key string, content []byte, size, budget int64) map[string]string {
	if int64(contract.JSONLen(string(content))) <= budget {
		out := digest(content)
		out[key] = string(content)
		return out
	}
	kept := contract.TruncateJSON(string(dropPartialRune(content)), int(budget))
	out := digest([]byte(kept))
	out[key] = kept
	out[gate.OutputTruncated] = "true"
	if size >= 0 {
		out[gate.OutputOriginalBytes] = strconv.FormatInt(max(size, int64(len(content))), 10)
	}
	return out
}

// dropPartialRune drops a UTF-8 sequence that a read cut short at the end
// of b (what follows it was not read).
func dropPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

func digest(b []byte) map[string]string {
	sum := sha256.Sum256(b)
	return map[string]string{"bytes": strconv.Itoa(len(b)), "sha256": hex.EncodeToString(sum[:])}
}
