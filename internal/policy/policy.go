// Package policy compiles cedar policy bundles and evaluates action requests
// against them.
//
// Evaluation is a pure, deny-by-default function: the same Request against
// the same Bundle always yields the same Result, with reasons in a fixed
// order, so the gate can record it and replay can recompute it. Bundles are
// identified by the SHA-256 of their source; the hash is recorded in every
// decision and replay finds the bundle again by that hash.
package policy

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	cedar "github.com/cedar-policy/cedar-go"

	"github.com/exoarmur/exoarmur/internal/contract"
)

//go:embed default.cedar
var defaultSource []byte

// history holds every earlier default bundle, byte for byte, so decisions
// recorded under it still replay after the default changed.
//
//go:embed history/*.cedar
var history embed.FS

// ErrUnknownBundle is returned when no bundle has the requested hash.
var ErrUnknownBundle = errors.New("unknown policy bundle")

// Bundle is a compiled, immutable policy set.
type Bundle struct {
	name     string
	hash     string
	src      []byte // the source hash is computed over
	policies []namedPolicy
	// By @scope annotation: "action" policies decide intents, "operation"
	// policies decide API operations. Each evaluation runs only its own
	// scope (fewer policies on the hot path); an unscoped policy runs in both.
	byScope map[string][]namedPolicy
	// The iterators of the two scopes, built once so an evaluation does not
	// allocate one.
	actions, operations *scoped
	// Cached cedar context records of fs requests: their context depends
	// only on (class, role, path_local), so each combination is built and
	// hashed once. Bounded by maxCachedContexts.
	fsContexts sync.Map // fsContextKey -> cedar.Record
	fsCached   atomic.Int32
	// The same for http requests, keyed by everything their context holds
	// (class, role, scheme check, host, host:port, allowlist): an agent
	// calls few hosts and the allowlist is the server's. Bounded too.
	httpContexts sync.Map // httpContextKey -> cedar.Record
	httpCached   atomic.Int32
}

// scoped iterates the policies of one scope, in source order.
type scoped struct {
	policies []namedPolicy
	all      iter.Seq2[cedar.PolicyID, *cedar.Policy]
}

func newScoped(ps []namedPolicy) *scoped {
	return &scoped{policies: ps, all: func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, p := range ps {
			if !yield(p.id, p.policy) {
				return
			}
		}
	}}
}

func (s *scoped) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] { return s.all }

type fsContextKey struct {
	class, role string
	local       bool
}

// maxCachedContexts bounds each context cache (roles and classes are
// small closed sets, hosts are few; past the bound, contexts are built per
// call).
const maxCachedContexts = 256

type httpContextKey struct {
	class, role, host, hostPort string
	schemeOK                    bool
	entries                     int    // how many allowlist entries
	allowlist                   string // the entries, NUL separated
}

// httpContext returns the cedar context of an http request.
func (b *Bundle) httpContext(class, role, target string, allowlist []string) cedar.Record {
	host, hostPort, schemeOK := URLHost(target)
	k := httpContextKey{class: class, role: role, host: host, hostPort: hostPort, schemeOK: schemeOK, entries: len(allowlist)}
	// The key must name one allowlist only: an entry holding the separator
	// (never valid, but a recorded input may say anything) is not cached.
	cacheable := true
	for _, h := range allowlist {
		cacheable = cacheable && !strings.Contains(h, "\x00")
	}
	switch len(allowlist) {
	case 0:
	case 1:
		k.allowlist = allowlist[0]
	default:
		k.allowlist = strings.Join(allowlist, "\x00")
	}
	if r, ok := b.httpContexts.Load(k); ok && cacheable {
		return r.(cedar.Record)
	}
	allow := make([]cedar.Value, len(allowlist))
	for i, h := range allowlist {
		allow[i] = cedar.String(strings.ToLower(h))
	}
	r := cedar.NewRecord(cedar.RecordMap{
		"class":     cedar.String(class),
		"role":      cedar.String(role),
		"effect":    cedar.String(effectHTTP),
		"scheme_ok": cedar.Boolean(schemeOK),
		"host":      cedar.String(host),
		"host_port": cedar.String(hostPort),
		"allowlist": cedar.NewSet(allow...),
	})
	if cacheable && b.httpCached.Add(1) <= maxCachedContexts {
		b.httpContexts.Store(k, r)
	}
	return r
}

func (b *Bundle) fsContext(class, role string, local bool) cedar.Record {
	k := fsContextKey{class, role, local}
	if r, ok := b.fsContexts.Load(k); ok {
		return r.(cedar.Record)
	}
	r := cedar.NewRecord(cedar.RecordMap{
		"class":      cedar.String(class),
		"role":       cedar.String(role),
		"effect":     cedar.String(effectFS),
		"path_local": cedar.Boolean(local),
	})
	if b.fsCached.Add(1) <= maxCachedContexts {
		b.fsContexts.Store(k, r)
	}
	return r
}

type namedPolicy struct {
	id     cedar.PolicyID
	policy *cedar.Policy
}

// Name returns the bundle's name.
func (b *Bundle) Name() string { return b.name }

// Source returns a copy of the cedar source the bundle was compiled from
// (its Hash is over exactly these bytes).
func (b *Bundle) Source() []byte { return bytes.Clone(b.src) }

// Hash returns the SHA-256 of the bundle's source.
func (b *Bundle) Hash() string { return b.hash }

// All iterates the policies in source order (cedar.PolicyIterator); a fixed
// order keeps diagnostics deterministic.
func (b *Bundle) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, p := range b.policies {
			if !yield(p.id, p.policy) {
				return
			}
		}
	}
}

// Compile parses cedar source into a Bundle. Every policy must carry an @id
// annotation, which becomes its reason code.
func Compile(name string, src []byte) (*Bundle, error) {
	list, err := cedar.NewPolicyListFromBytes(name, src)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	b := &Bundle{name: name, hash: contract.Hash(src), src: bytes.Clone(src), byScope: map[string][]namedPolicy{}}
	seen := map[cedar.PolicyID]bool{}
	for i, p := range list {
		id := cedar.PolicyID(p.Annotations()["id"])
		if id == "" {
			return nil, fmt.Errorf("policy %s: policy %d has no @id annotation", name, i)
		}
		if seen[id] {
			return nil, fmt.Errorf("policy %s: duplicate @id %q", name, id)
		}
		seen[id] = true
		np := namedPolicy{id, p}
		b.policies = append(b.policies, np)
		switch scope := p.Annotations()["scope"]; scope {
		case "action", "operation":
			b.byScope[string(scope)] = append(b.byScope[string(scope)], np)
		case "":
			b.byScope["action"] = append(b.byScope["action"], np)
			b.byScope["operation"] = append(b.byScope["operation"], np)
		default:
			return nil, fmt.Errorf("policy %s: %s: @scope must be \"action\" or \"operation\"", name, id)
		}
	}
	b.actions, b.operations = newScoped(b.byScope["action"]), newScoped(b.byScope["operation"])
	return b, nil
}

// defaultBundle is the bundle compiled into the binary.
var defaultBundle = sync.OnceValue(func() *Bundle {
	b, err := Compile("default.cedar", defaultSource)
	if err != nil {
		panic(err) // the embedded bundle is part of the binary; a test compiles it too
	}
	return b
})

// Default returns the bundle compiled into the binary.
func Default() *Bundle { return defaultBundle() }

// Library is an immutable set of bundles found by hash: what replay needs
// to re-decide a decision recorded under any of them. There is no global
// registry: whoever replays passes the library it trusts.
type Library struct {
	byHash map[string]*Bundle
}

// NewLibrary returns a library of bs.
func NewLibrary(bs ...*Bundle) *Library {
	l := &Library{byHash: make(map[string]*Bundle, len(bs))}
	for _, b := range bs {
		l.byHash[b.hash] = b
	}
	return l
}

// Lookup returns the bundle with the given hash.
func (l *Library) Lookup(hash string) (*Bundle, error) {
	if b, ok := l.byHash[hash]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("policy hash %s: %w", hash, ErrUnknownBundle)
}

// With returns a library of l's bundles and bs.
func (l *Library) With(bs ...*Bundle) *Library {
	out := &Library{byHash: maps.Clone(l.byHash)}
	for _, b := range bs {
		out.byHash[b.hash] = b
	}
	return out
}

// Hashes lists the library's bundle hashes, sorted.
func (l *Library) Hashes() []string {
	return slices.Sorted(maps.Keys(l.byHash))
}

// Builtin is the library of every bundle this binary ever shipped as its
// default: the current one and, byte for byte, each earlier one
// (policy/history), so decisions recorded under them still replay.
var Builtin = sync.OnceValue(func() *Library {
	bs := []*Bundle{Default()}
	entries, err := history.ReadDir("history")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		src, err := history.ReadFile("history/" + e.Name())
		if err != nil {
			panic(err)
		}
		old, err := Compile(e.Name(), src)
		if err != nil {
			panic(err) // TestHistoryReplays compiles each one too
		}
		bs = append(bs, old)
	}
	return NewLibrary(bs...)
})

// Effect is how the action policies see the target of one kind of action:
// the cedar entity type of the resource (whose id is the target) and the
// context built from the request, whose "effect" attribute is the
// effect's name. FS and HTTP are the effects the bundles are written for;
// each action registration (internal/action) names one. The set is
// closed: a new effect is its context here and its permits and forbids in
// the bundle (default.cedar documents the attributes).
type Effect struct {
	name     string
	resource cedar.EntityType
	context  func(b *Bundle, class, role, target string, allowlist []string) cedar.Record
	// params: the context also holds the request's params, their sizes
	// and the decision's time (WithParams).
	params bool
}

// Name returns the effect's name ("fs", "http"), "" for the zero Effect.
func (e Effect) Name() string { return e.name }

// WithParams returns the effect whose context also holds what a declared
// action is decided on besides its target (docs/POLICIES.md):
//
//	context.params  the intent's params, a record of strings
//	context.sizes   the length of each param, in characters (Long)
//	context.time    the decision's time in UTC: weekday ("monday" ..
//	                "sunday"), hour (0-23), minute (0-59), date ("2026-12-02")
//
// The time is the decision's recorded time, so a replay decides the same.
func (e Effect) WithParams() Effect {
	e.params = true
	return e
}

// HasParams reports whether the effect's context holds params and time.
func (e Effect) HasParams() bool { return e.params }

// The names the effects carry in the cedar context.
const (
	effectFS   = "fs"
	effectHTTP = "http"
	effectMCP  = "mcp"
)

// The effects of the bundles.
var (
	// FS: the target is a path in the tenant's sandbox. Resource
	// File::"<target>"; context class, role, effect and path_local
	// (PathLocal).
	FS = Effect{name: effectFS, resource: "File", context: fsInput}
	// HTTP: the target is a URL. Resource Url::"<target>"; context class,
	// role, effect, scheme_ok, host and host_port (URLHost), and the
	// allowlist.
	HTTP = Effect{name: effectHTTP, resource: "Url", context: (*Bundle).httpContext}
	// Tool: the target is an upstream MCP tool, named by its action type
	// mcp.<server>.<tool>. Resource Tool::"<target>"; context class, role,
	// effect, server and tool (ToolName).
	Tool = Effect{name: effectMCP, resource: "Tool", context: toolContext}
)

// ToolName splits an MCP tool's action type, mcp.<server>.<tool>, into
// its server and tool ("", "" when it is not one): the server is the
// part up to the next dot (a server's name holds none).
func ToolName(target string) (server, tool string) {
	rest, ok := strings.CutPrefix(target, "mcp.")
	if !ok {
		return "", ""
	}
	server, tool, ok = strings.Cut(rest, ".")
	if !ok || server == "" || tool == "" {
		return "", ""
	}
	return server, tool
}

func toolContext(_ *Bundle, class, role, target string, _ []string) cedar.Record {
	server, tool := ToolName(target)
	return cedar.NewRecord(cedar.RecordMap{
		"class":  cedar.String(class),
		"role":   cedar.String(role),
		"effect": cedar.String(effectMCP),
		"server": cedar.String(server),
		"tool":   cedar.String(tool),
	})
}

func fsInput(b *Bundle, class, role, target string, _ []string) cedar.Record {
	return b.fsContext(class, role, PathLocal(target))
}

// Request is what a policy decides about.
type Request struct {
	PrincipalID string
	Role        string
	Action      string
	Class       string
	Effect      Effect
	Target      string
	Allowlist   []string
	// Params and Time are in the context of an effect WithParams only.
	Params map[string]string
	Time   time.Time
}

// Result is a policy outcome: Allowed plus the ids of the policies that
// decided it (forbids when denied, permits when allowed), in source order.
type Result struct {
	Allowed bool
	Reasons []string
	Errors  []string
}

// Evaluate runs req against b. It is pure and denies by default: no permit,
// no effect (the zero Effect), or any evaluation error means deny.
func Evaluate(b *Bundle, req Request) Result {
	if req.Effect.context == nil {
		return Result{Reasons: []string{"unknown_effect"}}
	}
	ctx := req.Effect.context(b, req.Class, req.Role, req.Target, req.Allowlist)
	if req.Effect.params {
		ctx = withParams(ctx, req.Params, req.Time)
	}
	decision, diag := cedar.Authorize(b.actions, nil, cedar.Request{
		Principal: cedar.NewEntityUID("Principal", cedar.String(req.PrincipalID)),
		Action:    cedar.NewEntityUID("Action", cedar.String(req.Action)),
		Resource:  cedar.NewEntityUID(req.Effect.resource, cedar.String(req.Target)),
		Context:   ctx,
	})
	return resultOf(decision, diag)
}

// withParams returns ctx with the params, their sizes and the time
// (Effect.WithParams).
func withParams(ctx cedar.Record, params map[string]string, t time.Time) cedar.Record {
	m := ctx.Map()
	ps := make(cedar.RecordMap, len(params))
	sizes := make(cedar.RecordMap, len(params))
	for k, v := range params {
		ps[cedar.String(k)] = cedar.String(v)
		sizes[cedar.String(k)] = cedar.Long(utf8.RuneCountInString(v))
	}
	m["params"] = cedar.NewRecord(ps)
	m["sizes"] = cedar.NewRecord(sizes)
	m["time"] = timeRecord(t)
	return cedar.NewRecord(m)
}

// timeRecord is context.time of t: built once per minute (decisions of
// the same minute share it; it depends on nothing else).
func timeRecord(t time.Time) cedar.Record {
	t = t.UTC()
	minute := t.Unix() / 60
	if c := lastTime.Load(); c != nil && c.minute == minute {
		return c.rec
	}
	rec := cedar.NewRecord(cedar.RecordMap{
		"weekday": cedar.String(strings.ToLower(t.Weekday().String())),
		"hour":    cedar.Long(t.Hour()),
		"minute":  cedar.Long(t.Minute()),
		"date":    cedar.String(t.Format(time.DateOnly)),
	})
	lastTime.Store(&timeEntry{minute: minute, rec: rec})
	return rec
}

type timeEntry struct {
	minute int64
	rec    cedar.Record
}

var lastTime atomic.Pointer[timeEntry]

// resultOf turns a cedar outcome into a Result: reasons and errors sorted
// (no map order leaks into recorded decisions), and any evaluation error
// denies.
func resultOf(decision cedar.Decision, diag cedar.Diagnostic) Result {
	res := Result{Allowed: decision == cedar.Allow}
	for _, r := range diag.Reasons {
		res.Reasons = append(res.Reasons, string(r.PolicyID))
	}
	for _, e := range diag.Errors {
		res.Errors = append(res.Errors, string(e.PolicyID)+": "+e.Message)
	}
	if len(res.Errors) > 0 {
		res.Allowed = false // fail closed on any evaluation error
	}
	slices.Sort(res.Reasons)
	slices.Sort(res.Errors)
	return res
}

// PathLocal reports, lexically, whether target is a relative path that stays
// inside its root: not empty, not absolute, no ".." escape, no NUL and no
// backslash. Symlinks are handled at execution by os.Root.
func PathLocal(target string) bool {
	if strings.ContainsAny(target, "\x00\\") {
		return false
	}
	return filepath.IsLocal(target)
}

// URLHost returns the lowercased host, host:port, and whether the URL is an
// absolute http(s) URL without user info.
func URLHost(target string) (host, hostPort string, ok bool) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", "", false
	}
	return strings.ToLower(u.Hostname()), strings.ToLower(u.Host), true
}

// Operations a principal may be authorized for.
const (
	OpPropose           = "propose"
	OpExecute           = "execute"
	OpReadIntent        = "read_intent"         // the principal's own intents (every role)
	OpReadTenantIntents = "read_tenant_intents" // every intent of the tenant (operator, admin, auditor)
	OpReadAudit         = "read_audit"          // the audit list, of the principal's own intents (every role)
	OpReadTenantAudit   = "read_tenant_audit"   // the tenant's whole audit: list, export, verify (operator, admin, auditor)
	OpApprove           = "approve"
	OpReadApprovals     = "read_approvals"
	OpReadTenantSwitch  = "read_tenant_switch"
	OpFlipTenantSwitch  = "flip_tenant_switch"
	OpReadGlobalSwitch  = "read_global_switch"
	OpFlipGlobalSwitch  = "flip_global_switch"
	OpManageKeys        = "manage_keys"    // the keys of one tenant (System: of every tenant)
	OpKeyManagement     = "key_management" // the key endpoints; what they show and change is manage_keys per tenant
	OpReadMetrics       = "read_metrics"
	OpResolve           = "resolve_execution"
	// OpActivatePolicy makes a bundle the tenant's active one; it is
	// always decided under the global bundle in force (not the tenant's
	// own), so a tenant's bundle can neither lock its own replacement out
	// nor, unusable on a node, keep it from being replaced.
	OpActivatePolicy = "activate_policy"
	// OpActivateGlobalPolicy makes a bundle the global default (System).
	OpActivateGlobalPolicy = "activate_global_policy"
)

// OpRequest asks whether a principal may perform an operation; Tenant is
// empty for system operations.
type OpRequest struct {
	PrincipalID string
	Role        string
	Granted     []string
	Operation   string
	Tenant      string
}

// Authorize evaluates an operation request against b (the same bundle and
// engine as action policy). It is pure and denies by default; an evaluation
// error denies.
func Authorize(b *Bundle, req OpRequest) Result {
	granted := make([]cedar.Value, len(req.Granted))
	for i, t := range req.Granted {
		granted[i] = cedar.String(t)
	}
	resource := cedar.NewEntityUID("System", "exoarmur")
	if req.Tenant != "" {
		resource = cedar.NewEntityUID("Tenant", cedar.String(req.Tenant))
	}
	decision, diag := cedar.Authorize(b.operations, nil, cedar.Request{
		Principal: cedar.NewEntityUID("Principal", cedar.String(req.PrincipalID)),
		Action:    cedar.NewEntityUID("Action", cedar.String(req.Operation)),
		Resource:  resource,
		Context: cedar.NewRecord(cedar.RecordMap{
			"role":    cedar.String(req.Role),
			"tenant":  cedar.String(req.Tenant),
			"granted": cedar.NewSet(granted...),
		}),
	})
	return resultOf(decision, diag)
}
