// Package action is the action registry: the one place an action type is
// declared. A Registration says what the type is (its name, risk class,
// whether it only observes, what its target means), how the action
// policies see its target (a policy.Effect: the cedar resource and
// context built from the target), and how it runs (an Executor
// declaration naming one of the implementations in internal/executor).
// The five built-in types are registrations (builtin.go); Builtin returns
// their registry.
//
// A Registry is an immutable value, passed to whoever needs it like a
// policy bundle: gate.Decide and replay take one, the gate, the executors
// and the access layer are configured with one. There is no process-global
// registry that code registers into.
//
// # Layering
//
//	contract ← policy ← action ← auth, access, gate, replay ← executor ← app
//
// The decision path (gate.Decide, replay) needs an action's class and
// effect and must never reach an executor; the executors need the gate
// (they accept only a *gate.Permit, which only the gate can mint). So a
// registration declares its executor as data, an Executor (a kind and its
// settings), instead of holding executor code: internal/executor turns
// each registration into a gate.Executor (executor.New) and refuses a kind
// it does not implement. This package imports no executor and no gate;
// internal/contract keeps only the wire vocabulary (the classes A0..A3).
//
// # Adding an action type
//
// One Registration in builtin.go when it runs on an executor kind and an
// effect that exist: the gate, the executors, the key grants, the access
// layer, replay and the inventory find it through the registry. A new
// kind of executor is also an ExecutorKind here (and its entry in kinds)
// and its implementation in internal/executor (its entry in executor's
// implementations); a new effect is also its context in internal/policy
// and its permits and forbids in the policy bundle.
//
// # Declared actions
//
// An operator's own action types (issue 17) come from an actions file
// (file.go: ParseFile, LoadFile): a name, a class, a description, a JSON
// Schema of the params and a declarative HTTP request, each a
// Registration of executor kind HTTPTemplate whose Template holds the
// request as data (templates parsed once, the compiled params schema, the
// secret names and, when loaded, their values in an opaque Secret). A
// Registration still carries no executor code: Render (pure) fills the
// request from an intent's target and params with each secret as its
// placeholder, for operators and for the policy (PolicyTarget: the
// rendered URL); the executor alone renders it with the secrets' values
// (RenderRequest) to send it. The registry of a server is the built-ins
// and the declared actions (ParseRegistry).
package action

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// Registration is one action type.
type Registration struct {
	// Type names the action type: a V1 name, two lower-case words
	// joined by a dot ("fs.read"), or a wider v2 name, two or more
	// dot-separated segments of lower-case letters, digits, _ and -
	// ("tickets.create_v2", "mcp.fs.read_text_file"); 3..128 bytes, at
	// most 64 for a V1 name (contract.CheckActionName). An intent of a
	// v2 name is stored as a v2 intent (contracts/v2).
	Type string
	// Class is the risk class, contract.A0 (observe) to contract.A3
	// (irreversible): what a key must be granted and how many approvals
	// an intent needs.
	Class string
	// ReadOnly marks an action that only observes. Class A0 must be
	// read-only, and a read-only action must run on an executor that
	// does not write.
	ReadOnly bool
	// Description says what the target (and params) mean.
	Description string
	// Effect is how the action policies see the target: the cedar
	// resource and context built from it (policy.FS, policy.HTTP).
	Effect policy.Effect
	// Executor declares how the action runs.
	Executor Executor
}

// ExecutorKind names an implementation in internal/executor.
type ExecutorKind string

// The executor kinds internal/executor implements.
const (
	// SandboxRead reads the target, a file in the tenant's sandbox.
	SandboxRead ExecutorKind = "sandbox-read"
	// SandboxWrite writes params.content to the target, a file in the
	// tenant's sandbox (replacing it whole).
	SandboxWrite ExecutorKind = "sandbox-write"
	// SandboxDelete deletes the target, a file in the tenant's sandbox.
	SandboxDelete ExecutorKind = "sandbox-delete"
	// HTTPRequest sends one request (Method) to the target, a URL whose
	// host is on the allowlist; a POST sends params.body with
	// params.content_type (default application/json).
	HTTPRequest ExecutorKind = "http-request"
)

// kind is what this package knows of an executor kind to check a
// registration: the effect its targets are (so the policy decides on
// what the executor touches) and whether it can write.
type kind struct {
	effect  string
	methods map[string]bool // HTTPRequest: the methods it sends, and whether each only reads
	reads   bool            // the sandbox kinds: whether it only reads
	// template: the kind sends what the registration's Template renders
	// (which it then requires).
	template bool
}

var kinds = map[ExecutorKind]kind{
	SandboxRead:   {effect: policy.FS.Name(), reads: true},
	SandboxWrite:  {effect: policy.FS.Name()},
	SandboxDelete: {effect: policy.FS.Name()},
	HTTPRequest:   {effect: policy.HTTP.Name(), methods: map[string]bool{http.MethodGet: true, http.MethodPost: false}},
	HTTPTemplate:  {effect: policy.HTTP.Name(), methods: templateMethods, template: true},
	// MCPTool: whether a tool only reads is the operator's mapping (or a
	// trusted server's annotation); the gateway cannot see inside it.
	MCPTool: {effect: policy.Tool.Name(), reads: true},
}

// Kinds lists the executor kinds, sorted (internal/executor must
// implement each).
func Kinds() []ExecutorKind {
	ks := make([]ExecutorKind, 0, len(kinds))
	for k := range kinds {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Executor declares how an action type runs: which implementation in
// internal/executor performs it (Kind) and its settings.
type Executor struct {
	Kind ExecutorKind
	// Method is the HTTPRequest method (GET or POST) or the
	// HTTPTemplate method (GET, POST, PUT, PATCH, DELETE); empty for the
	// other kinds.
	Method string
	// Template is what an HTTPTemplate action sends (ParseFile builds
	// it); nil for the other kinds.
	Template *Template
	// MCP is the upstream tool an MCPTool action calls; nil for the
	// other kinds.
	MCP *MCPRef
}

// ErrUnknown is returned for an action type that is not registered.
var ErrUnknown = errors.New("unknown action type")

// ErrInvalid is returned for a registration that is malformed,
// inconsistent, or a second one of a type.
var ErrInvalid = errors.New("invalid action registration")

// Validate reports what is wrong with r, wrapping ErrInvalid.
func (r Registration) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("action %q: %w: %s", r.Type, ErrInvalid, fmt.Sprintf(format, args...))
	}
	k, known := kinds[r.Executor.Kind]
	nameErr := contract.CheckActionName(r.Type) // a type outside the contracts could never be proposed
	switch {
	case nameErr != nil:
		return bad("the type: %v", nameErr)
	case !contract.ValidClass(r.Class):
		return bad("class %q is not one of A0..A3", r.Class)
	case r.Description == "":
		return bad("a description of the target is required")
	case r.Effect.Name() == "":
		return bad("an effect (how the policy sees the target) is required")
	case !known:
		return bad("executor kind %q is not one of %v", r.Executor.Kind, Kinds())
	case k.effect != r.Effect.Name():
		return bad("executor kind %s acts on %s targets, the effect is %s", r.Executor.Kind, k.effect, r.Effect.Name())
	}
	reads := k.reads
	if k.methods != nil {
		ro, ok := k.methods[r.Executor.Method]
		if !ok {
			return bad("executor kind %s: method %q is not one of %v", r.Executor.Kind, r.Executor.Method, slices.Sorted(maps.Keys(k.methods)))
		}
		reads = ro
	} else if r.Executor.Method != "" {
		return bad("executor kind %s takes no method", r.Executor.Kind)
	}
	switch {
	case k.template && r.Executor.Template == nil:
		return bad("executor kind %s needs a template (what it sends)", r.Executor.Kind)
	case !k.template && r.Executor.Template != nil:
		return bad("executor kind %s takes no template", r.Executor.Kind)
	case k.template && r.Executor.Template.method != r.Executor.Method:
		return bad("executor method %s differs from its template's %s", r.Executor.Method, r.Executor.Template.method)
	}
	if err := r.checkMCP(); err != nil {
		return bad("%v", err)
	}
	switch {
	case r.Class == contract.A0 && !r.ReadOnly:
		return bad("class A0 (observe) must be read-only")
	case r.ReadOnly && !reads:
		return bad("a read-only action cannot run on executor kind %s %s", r.Executor.Kind, r.Executor.Method)
	}
	return nil
}

// Registry is an immutable, ordered set of registrations, one per type.
type Registry struct {
	list   []Registration
	byType map[string]int
}

// New returns the registry of regs, in their order. An invalid
// registration, or a second one of a type, is an error (ErrInvalid).
func New(regs ...Registration) (*Registry, error) {
	r := &Registry{list: make([]Registration, 0, len(regs)), byType: make(map[string]int, len(regs))}
	for _, reg := range regs {
		if err := reg.Validate(); err != nil {
			return nil, err
		}
		if _, dup := r.byType[reg.Type]; dup {
			return nil, fmt.Errorf("action %q: %w: registered twice", reg.Type, ErrInvalid)
		}
		r.byType[reg.Type] = len(r.list)
		r.list = append(r.list, reg)
	}
	return r, nil
}

// Lookup returns the registration of an action type. A nil registry
// knows none.
func (r *Registry) Lookup(typ string) (Registration, bool) {
	if r == nil {
		return Registration{}, false
	}
	i, ok := r.byType[typ]
	if !ok {
		return Registration{}, false
	}
	return r.list[i], true
}

// List returns every registration in registry order.
func (r *Registry) List() []Registration {
	if r == nil {
		return nil
	}
	return slices.Clone(r.list)
}

// ClassOf returns the class of a registered action type, or "".
func (r *Registry) ClassOf(typ string) string {
	reg, _ := r.Lookup(typ)
	return reg.Class
}
