// Package active holds which policy bundle each tenant decides under: one
// active bundle per tenant, a global one as the default of every tenant
// without its own, and the node's configured bundle (serve --policy-dir,
// else the built-in default) under both.
//
// An activation (Activate) checks the bundle against the node's action
// registry and the floors no bundle may break, archives it by hash
// (internal/policy/archive: write-once), writes the scope's pointer (its
// hash, who and why) to the control bucket with compare-and-set, audits it
// as policy.activated with the old and the new hash (the tenant's chain,
// or the system chain for the global one), and returns after every live
// node has applied it: the pointers live in the kill switches' control
// bucket and every node's switch watcher applies them (Set is its
// killswitch.Applier) before it acknowledges the revision, so an
// activation propagates with the switches' discipline (killswitch.Propagate).
//
// Fail closed: a pointer this node cannot apply (unreadable, its bundle
// missing from the archive or corrupt, or invalid against this node's
// action registry) makes the scope's decisions deny (For reports it),
// never fall back to an older bundle; the node retries it.
package active

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// KindActivated is the audit kind of an activation.
const KindActivated = "policy.activated"

// ScopeGlobal names the global bundle in pointers and records.
const ScopeGlobal = "global"

// Pointer is the stored value of a scope's active bundle.
type Pointer struct {
	Hash     string    `json:"hash"`
	Previous string    `json:"previous"` // the hash in force before ("" : none of the scope's own)
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// Archive is what activation needs of the bundle archive
// (archive.Archive).
type Archive interface {
	Put(ctx context.Context, b *policy.Bundle) error
	Get(ctx context.Context, hash string) (*policy.Bundle, error)
}

// Control is what activation needs of the control bucket.
type Control interface {
	Get(ctx context.Context, key string) (kv.Entry, error)
	Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error)
	Delete(ctx context.Context, key string, rev uint64) error
}

// Propagator waits until every live node applied a control revision
// (*killswitch.Switches).
type Propagator interface {
	Propagate(ctx context.Context, rev uint64) (killswitch.Propagation, error)
}

// Config wires a Set.
type Config struct {
	// Base is what a scope decides under with no pointer of its own and
	// no global one: the node's configured bundle.
	Base *policy.Bundle
	// Validator checks a bundle against this node's action registry.
	Validator *policy.Validator
	Archive   Archive
	Control   Control
	Audit     *audit.Log
	Now       func() time.Time
	Logger    *slog.Logger
	// Retry is how long after a failed apply the pointer is tried again
	// (default 5 s).
	Retry time.Duration
}

// Set is a node's table of active bundles.
type Set struct {
	cfg  Config
	prop Propagator

	mu      sync.RWMutex
	entries map[tenant.ID]*entry // tenant.System: the global pointer
}

type entry struct {
	ptr    Pointer
	raw    []byte
	bundle *policy.Bundle // nil when err
	err    error
	tried  time.Time
	busy   bool // a retry is running
}

// ErrUnavailable marks a scope whose active bundle this node cannot use:
// its decisions deny.
var ErrUnavailable = errors.New("active policy bundle unavailable")

// New returns an empty Set (every scope on Base) over cfg.
func New(cfg Config) (*Set, error) {
	if cfg.Base == nil || cfg.Validator == nil || cfg.Archive == nil || cfg.Control == nil || cfg.Audit == nil {
		return nil, errors.New("active policy: the base bundle, the validator, the archive, the control bucket and the audit log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 5 * time.Second
	}
	return &Set{cfg: cfg, entries: map[tenant.ID]*entry{}}, nil
}

// Attach sets what Activate waits on (the node's switches, started with
// this Set as their Applier).
func (s *Set) Attach(p Propagator) { s.prop = p }

// Base returns the node's configured bundle.
func (s *Set) Base() *policy.Bundle { return s.cfg.Base }

// For returns the bundle t decides under (t's own, else the global one,
// else Base) and its hash. When the pointer in force cannot be applied on
// this node, the bundle is nil, the hash is the pointer's, and err wraps
// ErrUnavailable: the caller denies.
func (s *Set) For(t tenant.ID) (*policy.Bundle, string, error) {
	s.mu.RLock()
	e := s.entries[t]
	if e == nil && t != tenant.System {
		e = s.entries[tenant.System]
	}
	s.mu.RUnlock()
	if e == nil {
		return s.cfg.Base, s.cfg.Base.Hash(), nil
	}
	if e.err != nil {
		s.retryLater(t, e)
		return nil, e.ptr.Hash, fmt.Errorf("%w: %v", ErrUnavailable, e.err)
	}
	return e.bundle, e.bundle.Hash(), nil
}

// Active describes what a scope decides under.
type Active struct {
	Scope string `json:"scope"`
	// Hash is the bundle in force; Source says where it comes from:
	// "tenant" (its own activation), "global" (the global activation),
	// "node" (the node's configured bundle: no activation).
	Hash   string   `json:"hash"`
	Source string   `json:"source"`
	Ptr    *Pointer `json:"activation,omitempty"`
	Error  string   `json:"error,omitempty"` // the pointer cannot be applied here: decisions deny
}

// Describe returns what t (tenant.System: the global scope) decides under.
func (s *Set) Describe(t tenant.ID) Active {
	a := Active{Scope: scopeName(t), Source: "node", Hash: s.cfg.Base.Hash()}
	s.mu.RLock()
	e, src := s.entries[t], "tenant"
	if t == tenant.System {
		src = ScopeGlobal
	}
	if e == nil && t != tenant.System {
		e, src = s.entries[tenant.System], ScopeGlobal
	}
	s.mu.RUnlock()
	if e != nil {
		p := e.ptr
		a.Source, a.Hash, a.Ptr = src, p.Hash, &p
		if e.err != nil {
			a.Error = e.err.Error()
		}
	}
	return a
}

func scopeName(t tenant.ID) string {
	if t == tenant.System {
		return ScopeGlobal
	}
	return t.String()
}

// ApplyControl implements killswitch.Applier: it applies a pointer
// change of the control bucket (loading its bundle from the archive and
// checking it against this node's registry) before the watcher
// acknowledges the revision.
func (s *Set) ApplyControl(key string, value []byte, deleted bool) bool {
	t, err := tenant.PolicyKeyTenant(key)
	if err != nil {
		return false
	}
	if deleted {
		s.mu.Lock()
		delete(s.entries, t)
		s.mu.Unlock()
		s.cfg.Logger.Info("active policy removed", "scope", scopeName(t))
		return true
	}
	e := s.load(value)
	s.mu.Lock()
	s.entries[t] = e
	s.mu.Unlock()
	if e.err != nil {
		s.cfg.Logger.Error("active policy cannot be applied on this node: the scope's actions are denied until it can",
			"scope", scopeName(t), "hash", e.ptr.Hash, "err", e.err)
	} else {
		s.cfg.Logger.Info("active policy applied", "scope", scopeName(t), "hash", e.ptr.Hash, "actor", e.ptr.Actor)
	}
	return true
}

// applyTimeout bounds the archive read of one apply.
const applyTimeout = 5 * time.Second

func (s *Set) load(raw []byte) *entry {
	e := &entry{raw: bytes.Clone(raw), tried: time.Now()}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e.ptr); err != nil {
		e.err = fmt.Errorf("unreadable pointer: %w", err)
		return e
	}
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	b, err := s.cfg.Archive.Get(ctx, e.ptr.Hash)
	if err != nil {
		e.err = fmt.Errorf("bundle %s: %w", e.ptr.Hash, err)
		return e
	}
	// The archived source is the files' concatenation: checked again as
	// files against this node's registry (another node may declare other
	// actions).
	checked, err := policy.LoadFiles("bundle "+short(e.ptr.Hash), policy.SplitSource(b.Source()), s.cfg.Validator)
	switch {
	case err != nil:
		e.err = fmt.Errorf("bundle %s does not validate on this node: %w", e.ptr.Hash, err)
	case checked.Hash() != e.ptr.Hash:
		e.err = fmt.Errorf("bundle %s: its files make bundle %s", e.ptr.Hash, checked.Hash())
	default:
		e.bundle = b
	}
	return e
}

// retryLater re-applies a failed pointer in the background, at most
// every Retry, unless a newer value replaced it.
func (s *Set) retryLater(t tenant.ID, e *entry) {
	s.mu.Lock()
	if e.busy || time.Since(e.tried) < s.cfg.Retry || s.entries[t] != e {
		s.mu.Unlock()
		return
	}
	e.busy = true
	s.mu.Unlock()
	go func() {
		n := s.load(e.raw)
		s.mu.Lock()
		defer s.mu.Unlock()
		e.busy, e.tried = false, n.tried
		if s.entries[t] == e && n.err == nil {
			s.entries[t] = n
			s.cfg.Logger.Info("active policy applied on retry", "scope", scopeName(t), "hash", n.ptr.Hash)
		}
	}()
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Request is an activation.
type Request struct {
	Scope     tenant.ID // a tenant, or tenant.System for the global bundle
	Files     []policy.File
	Actor     string
	Reason    string
	RequestID string
}

// Activation is the outcome of Activate.
type Activation struct {
	Scope          string                 `json:"scope"`
	Hash           string                 `json:"hash"`
	Previous       string                 `json:"previous"`        // the hash in force before, on the node that activated
	PreviousSource string                 `json:"previous_source"` // where it came from: tenant, global, node
	Unchanged      bool                   `json:"unchanged"`       // the bundle was already the scope's own: nothing was written
	Propagation    killswitch.Propagation `json:"propagation"`
}

// Activate makes req.Files the bundle of req.Scope (see the package doc).
// An invalid bundle is a *policy.Problems (policy.ErrInvalidBundle) and
// nothing is written; a missing reason or actor is a contract.Error.
func (s *Set) Activate(ctx context.Context, req Request) (Activation, error) {
	if err := req.Scope.Check(); err != nil {
		return Activation{}, err
	}
	if req.Actor == "" {
		return Activation{}, errors.New("active policy: an actor is required")
	}
	if req.Reason == "" {
		return Activation{}, contract.Errorf(contract.CodeInvalid, "a reason is required: say why this bundle is activated (it is recorded)")
	}
	if s.prop == nil {
		return Activation{}, errors.New("active policy: not attached to the node's switches")
	}
	b, err := policy.LoadFiles("bundle", req.Files, s.cfg.Validator)
	if err != nil {
		return Activation{}, err
	}
	before := s.Describe(req.Scope) // what the scope decided under (on this node)
	if err := s.cfg.Archive.Put(ctx, b); err != nil {
		return Activation{}, fmt.Errorf("active policy: archive the bundle: %w", err)
	}
	key := tenant.TenantPolicyKey(req.Scope)
	if req.Scope == tenant.System {
		key = tenant.GlobalPolicyKey
	}
	name := scopeName(req.Scope)
	ptr := Pointer{Hash: b.Hash(), Actor: req.Actor, Reason: req.Reason, At: s.cfg.Now().UTC()}
	var rev uint64
	for attempt := 0; ; attempt++ {
		cur, err := s.cfg.Control.Get(ctx, key)
		var opts kv.PutOptions
		switch {
		case errors.Is(err, kv.ErrNotFound):
			ptr.Previous, opts = "", kv.PutOptions{Create: true}
		case err != nil:
			return Activation{}, fmt.Errorf("active policy: read the %s pointer: %w", name, err)
		default:
			var old Pointer
			_ = json.Unmarshal(cur.Value, &old) // unreadable: previous unknown ("")
			if old.Hash == ptr.Hash {
				return Activation{Scope: name, Hash: ptr.Hash, Previous: ptr.Hash, PreviousSource: before.Source, Unchanged: true,
					Propagation: killswitch.Propagation{Confirmed: []string{}, Unconfirmed: []string{}}}, nil
			}
			ptr.Previous, opts = old.Hash, kv.PutOptions{Revision: cur.Revision}
		}
		data, _ := json.Marshal(ptr) // plain struct: cannot fail
		rev, err = s.cfg.Control.Put(ctx, key, data, opts)
		if err == nil {
			break
		}
		if attempt < 8 && (errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrConflict)) {
			continue // another activation meanwhile: re-read
		}
		return Activation{}, fmt.Errorf("active policy: write the %s pointer: %w", name, err)
	}
	if _, err := s.cfg.Audit.Append(ctx, req.Scope, audit.Entry{
		Kind: KindActivated, CorrelationID: key, Actor: req.Actor, RequestID: req.RequestID, Time: ptr.At,
		Payload: map[string]any{"scope": name, "hash": ptr.Hash, "previous": before.Hash, "previous_source": before.Source, "reason": req.Reason, "revision": rev},
	}); err != nil {
		// Fail closed: an activation that is not recorded is undone, back
		// to the bundle before it (or to no pointer of the scope's own).
		s.rollback(ctx, key, ptr, rev)
		return Activation{}, fmt.Errorf("active policy: audit the activation of %s (rolled back): %w", name, err)
	}
	prop, err := s.prop.Propagate(ctx, rev)
	s.cfg.Logger.Info("policy activated", "scope", name, "hash", ptr.Hash, "previous", ptr.Previous, "actor", req.Actor,
		"reason", req.Reason, "revision", rev, "previous_in_force", before.Hash, "confirmed", prop.Confirmed, "unconfirmed", prop.Unconfirmed, "waited_ms", prop.WaitedMS)
	return Activation{Scope: name, Hash: ptr.Hash, Previous: before.Hash, PreviousSource: before.Source, Propagation: prop}, err
}

// rollback undoes an unaudited activation: the previous pointer written
// back, or, when the scope had none of its own, the pointer removed.
func (s *Set) rollback(ctx context.Context, key string, ptr Pointer, rev uint64) {
	ctx = context.WithoutCancel(ctx)
	var err error
	if ptr.Previous == "" {
		err = s.cfg.Control.Delete(ctx, key, rev)
	} else {
		back, _ := json.Marshal(Pointer{Hash: ptr.Previous, Previous: ptr.Hash, Actor: "system", Reason: "rollback: the activation could not be audited", At: ptr.At})
		_, err = s.cfg.Control.Put(ctx, key, back, kv.PutOptions{Revision: rev})
	}
	if err != nil {
		s.cfg.Logger.Error("active policy: roll back an unaudited activation", "key", key, "err", err)
	}
}
