// Package killswitch holds the global and per-tenant kill switches: durable,
// revisioned entries in the control bucket, mirrored into a watched local
// copy that the gate reads on every decision.
//
// Safe by default: a switch that was never set is engaged, and so is every
// switch whenever the local copy has not been confirmed current within the
// staleness bound (Bound, 2 s): the watcher must have applied everything the
// bucket's stream held at a probe taken less than Bound ago. A change is
// written with compare-and-set on the previous revision, audited (global
// changes in the system chain, tenant changes in the tenant's chain), and
// returns only after every live node has acknowledged applying it, or after
// Bound, when a node that has not caught up can no longer call itself fresh.
//
// The package imports no NATS: it declares what it needs of the store, the
// control bucket (Bucket: a kv.Bucket's reads and writes, a watch, the
// latest revision) and the nodes' acknowledgements (Peers: publish and
// subscribe, nothing stored), which the store adapter implements
// (natsstore.Bucket, natsstore.Bus); a failed compare-and-set comes back
// as kv.ErrExists or kv.ErrConflict.
package killswitch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Bound is the staleness bound: a local copy not confirmed current within
// it reads as engaged.
const Bound = 2 * time.Second

const (
	probeEvery     = 200 * time.Millisecond
	heartbeatEvery = 500 * time.Millisecond
)

// ScopeGlobal names the global switch in readings.
const ScopeGlobal = "global"

// KindChanged is the audit kind of a switch change.
const KindChanged = "killswitch.changed"

// Reading is one switch as the gate saw it; it is recorded in every
// decision input, so replay reproduces blocked decisions exactly.
type Reading struct {
	Scope    string    `json:"scope"`
	Engaged  bool      `json:"engaged"`
	Revision uint64    `json:"revision"` // KV revision; 0 = never set (engaged by default)
	Actor    string    `json:"actor,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at,omitzero"`
	Fresh    bool      `json:"fresh"` // the local copy was confirmed current within Bound
}

// state is the stored value of a switch.
type state struct {
	Engaged bool      `json:"engaged"`
	Reason  string    `json:"reason"`
	Actor   string    `json:"actor"`
	At      time.Time `json:"at"`
}

// ErrStale is returned when a change cannot be confirmed locally.
var ErrStale = errors.New("kill switch state is stale")

// Bucket is what the switches need of the control bucket
// (natsstore.Bucket implements it).
type Bucket interface {
	// Get returns key's current value; kv.ErrNotFound when it has none.
	Get(ctx context.Context, key string) (kv.Entry, error)
	// Put writes under o's conditions: with Create, kv.ErrExists when the
	// key holds a value; with a Revision, kv.ErrConflict when another
	// revision is current.
	Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error)
	// Watch delivers every key's current value, then a change marked
	// CaughtUp, then every later change, until ctx ends; then it closes
	// the channel.
	Watch(ctx context.Context) (<-chan kv.Change, error)
	// LastRevision returns the bucket's latest revision, of any key.
	LastRevision(ctx context.Context) (uint64, error)
}

// Peers carries the nodes' announcements of the revision they applied
// (natsstore.Bus implements it): best effort and never stored, so they
// are repeated.
type Peers interface {
	// Publish sends data on subject to the current subscribers.
	Publish(subject string, data []byte) error
	// Subscribe calls fn with every message on subject until
	// unsubscribe is called.
	Subscribe(subject string, fn func(data []byte)) (unsubscribe func() error, err error)
}

// Applier applies the control entries that are not kill switches (the
// active policy bundles: internal/policy/active). The watcher calls it
// for each change of such a key, in revision order, and counts the
// revision applied, and so acknowledges it to the other nodes, only after
// it returned: a change another node waits for (Propagate) is in force on
// every node that confirmed it.
type Applier interface {
	// ApplyControl applies key's new value (deleted: its removal); it
	// reports false for a key it does not know, which is then ignored.
	ApplyControl(key string, value []byte, deleted bool) bool
}

// Switches is a node's view of the kill switches.
type Switches struct {
	mono    func() time.Time // real clock: freshness, peers, deadlines
	control Bucket
	others  Applier
	peers   Peers
	log     *audit.Log
	now     func() time.Time
	logger  *slog.Logger
	node    string // unique per process: name/random

	mu        sync.RWMutex
	states    map[string]entry // control key -> last applied entry
	applied   uint64           // highest revision applied
	lastFresh time.Time        // time of the last probe the watcher had caught up with
	started   bool
	changed   *sync.Cond // broadcast on every apply

	peersMu sync.Mutex
	heard   map[string]peer // node -> its last announcement

	cancel context.CancelFunc
	done   chan struct{}
}

type entry struct {
	st  state
	rev uint64
}

type peer struct {
	seen    time.Time
	applied uint64
}

// Config wires Switches.
type Config struct {
	Control Bucket // the control bucket (tenant.ControlBucket)
	Peers   Peers  // the nodes' acknowledgements (tenant.ControlAppliedSubject)
	Audit   *audit.Log
	Now     func() time.Time // clock for the recorded time of a change (freshness always uses the real clock)
	Node    string
	Logger  *slog.Logger
	// Others, when set, applies the control entries that are not kill
	// switches; without it they are ignored.
	Others Applier
}

// Start loads the switches, starts the watcher, the freshness probe and the
// heartbeat, and returns once the first load is complete (or ctx ends).
func Start(ctx context.Context, cfg Config) (*Switches, error) {
	if cfg.Control == nil || cfg.Peers == nil || cfg.Audit == nil {
		return nil, errors.New("killswitch: the control bucket, the peers and the audit log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	s := &Switches{
		mono:    time.Now,
		control: cfg.Control, others: cfg.Others, peers: cfg.Peers, log: cfg.Audit, now: cfg.Now, logger: cfg.Logger,
		node:   cfg.Node + "/" + hex.EncodeToString(rnd[:]),
		states: map[string]entry{}, heard: map[string]peer{}, done: make(chan struct{}),
	}
	s.changed = sync.NewCond(&s.mu)
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	changes, err := s.control.Watch(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("killswitch: watch: %w", err)
	}
	unsubscribe, err := s.peers.Subscribe(tenant.ControlAppliedSubject, s.onPeer)
	if err != nil {
		cancel() // also ends the watch
		return nil, fmt.Errorf("killswitch: subscribe: %w", err)
	}
	initial := make(chan struct{})
	go s.watch(changes, initial)
	go func() {
		defer close(s.done)
		defer unsubscribe() //nolint:errcheck // shutting down
		s.loop(wctx)
	}()
	select {
	case <-initial:
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	s.probe(ctx)
	return s, nil
}

// Stop ends the watcher and background loops.
func (s *Switches) Stop() {
	s.cancel()
	<-s.done
}

// Node returns this process's node identity (name/random).
func (s *Switches) Node() string { return s.node }

// watch applies the watch's changes until it ends (Stop ends it).
func (s *Switches) watch(changes <-chan kv.Change, initial chan struct{}) {
	once := sync.OnceFunc(func() { close(initial) })
	for c := range changes {
		if c.CaughtUp { // end of the initial values
			s.mu.Lock()
			s.started = true
			s.mu.Unlock()
			once()
			continue
		}
		s.apply(c)
	}
}

func (s *Switches) apply(c kv.Change) {
	scope, switchErr := tenant.SwitchKeyTenant(c.Key)
	if switchErr != nil {
		// Not a switch: applied by its owner (outside the lock: it may
		// read the store), then counted like a switch.
		if s.others != nil && !s.others.ApplyControl(c.Key, c.Value, c.Deleted) {
			s.logger.Warn("control bucket: unknown key ignored", "key", c.Key, "revision", c.Revision)
		}
		s.mu.Lock()
		s.applied = max(s.applied, c.Revision)
		applied := s.applied
		s.changed.Broadcast()
		s.mu.Unlock()
		s.announce(applied)
		return
	}
	s.mu.Lock()
	if c.Deleted { // deleted or purged: back to the default, engaged
		delete(s.states, c.Key)
	} else {
		var st state
		if err := json.Unmarshal(c.Value, &st); err != nil {
			// Unreadable state is engaged state.
			st = state{Engaged: true, Reason: "unreadable stored state: " + err.Error(), Actor: "system"}
		}
		s.states[c.Key] = entry{st, c.Revision}
	}
	s.applied = max(s.applied, c.Revision)
	applied := s.applied
	name := scope.String()
	if scope == tenant.System {
		name = ScopeGlobal
	}
	engaged := 1.0
	if st, ok := s.states[c.Key]; ok && !st.st.Engaged {
		engaged = 0
	}
	metrics.KillSwitchEngaged.WithLabelValues(name).Set(engaged)
	s.changed.Broadcast()
	s.mu.Unlock()
	s.announce(applied)
}

// announce tells the other nodes which revision this node has applied.
func (s *Switches) announce(applied uint64) {
	b, _ := json.Marshal(peerMsg{Node: s.node, Applied: applied}) // plain struct: cannot fail
	_ = s.peers.Publish(tenant.ControlAppliedSubject, b)          // best effort; heartbeats repeat it
}

type peerMsg struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
}

func (s *Switches) onPeer(data []byte) {
	var p peerMsg
	if json.Unmarshal(data, &p) != nil || p.Node == "" {
		return
	}
	s.peersMu.Lock()
	s.heard[p.Node] = peer{seen: s.mono(), applied: p.Applied}
	s.peersMu.Unlock()
}

func (s *Switches) loop(ctx context.Context) {
	probe := time.NewTicker(probeEvery)
	beat := time.NewTicker(heartbeatEvery)
	defer probe.Stop()
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-probe.C:
			s.probe(ctx)
		case <-beat.C:
			s.mu.RLock()
			applied := s.applied
			s.mu.RUnlock()
			s.announce(applied)
		}
	}
}

// probe confirms freshness: it reads the control bucket's latest revision
// and, if the watcher has applied at least that much, records the probe's
// start time as the moment the local copy was known current.
func (s *Switches) probe(ctx context.Context) {
	start := s.mono()
	pctx, cancel := context.WithTimeout(ctx, Bound/2)
	defer cancel()
	last, err := s.control.LastRevision(pctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started && s.applied >= last {
		s.lastFresh = start
	}
}

func (s *Switches) reading(key, scope string, now time.Time) Reading {
	r := Reading{Scope: scope, Engaged: true, Fresh: s.started && !s.lastFresh.IsZero() && now.Sub(s.lastFresh) <= Bound}
	if e, ok := s.states[key]; ok {
		r.Engaged, r.Revision, r.Actor, r.Reason, r.At = e.st.Engaged, e.rev, e.st.Actor, e.st.Reason, e.st.At
	}
	return r
}

// Read returns the global switch and t's switch from the local copy. A
// stale copy reads Fresh=false, which the gate treats as engaged.
func (s *Switches) Read(t tenant.ID) (global, tenantSwitch Reading) {
	now := s.mono()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reading(tenant.GlobalSwitchKey, ScopeGlobal, now), s.reading(tenant.TenantSwitchKey(t), t.String(), now)
}

// ReadScope returns one switch: the global one for tenant.System.
func (s *Switches) ReadScope(t tenant.ID) Reading {
	g, ts := s.Read(t)
	if t == tenant.System {
		return g
	}
	return ts
}

// Change is the outcome of Set.
type Change struct {
	Previous    Reading     `json:"previous"`
	Current     Reading     `json:"current"`
	Propagation Propagation `json:"propagation"`
}

// Propagation reports which live nodes confirmed applying a change.
type Propagation struct {
	Confirmed   []string `json:"confirmed"`
	Unconfirmed []string `json:"unconfirmed"`
	WaitedMS    int64    `json:"waited_ms"`
}

// Flip is a change of one switch: the state wanted, why, and by whom.
type Flip struct {
	Engaged   bool
	Reason    string
	Actor     string
	RequestID string
}

// Set engages or disengages the switch of scope (tenant.System for the
// global switch), as f.Actor, for f.Reason. It writes with compare-and-set
// on the revision it read, audits the change, and waits for propagation.
func (s *Switches) Set(ctx context.Context, scope tenant.ID, f Flip) (Change, error) {
	engaged, reason, actor, requestID := f.Engaged, f.Reason, f.Actor, f.RequestID
	if err := scope.Check(); err != nil {
		return Change{}, err
	}
	if reason == "" || actor == "" {
		return Change{}, errors.New("killswitch: reason and actor are required")
	}
	key, scopeName := tenant.TenantSwitchKey(scope), scope.String()
	if scope == tenant.System {
		key, scopeName = tenant.GlobalSwitchKey, ScopeGlobal
	}
	start := s.mono()
	st := state{Engaged: engaged, Reason: reason, Actor: actor, At: s.now().UTC()}
	data, err := json.Marshal(st)
	if err != nil {
		return Change{}, err
	}
	var prev Reading
	var rev uint64
	for attempt := 0; ; attempt++ {
		e, err := s.control.Get(ctx, key)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			prev = Reading{Scope: scopeName, Engaged: true, Fresh: true}
			rev, err = s.control.Put(ctx, key, data, kv.PutOptions{Create: true})
		case err != nil:
			return Change{}, fmt.Errorf("killswitch: read %s: %w", scopeName, err)
		default:
			var old state
			if json.Unmarshal(e.Value, &old) != nil {
				old = state{Engaged: true}
			}
			prev = Reading{Scope: scopeName, Engaged: old.Engaged, Revision: e.Revision, Actor: old.Actor, Reason: old.Reason, At: old.At, Fresh: true}
			rev, err = s.control.Put(ctx, key, data, kv.PutOptions{Revision: e.Revision})
		}
		if err == nil {
			break
		}
		if attempt < 8 && (errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrConflict)) {
			continue // another operator changed it meanwhile: re-read
		}
		return Change{}, fmt.Errorf("killswitch: write %s: %w", scopeName, err)
	}
	cur := Reading{Scope: scopeName, Engaged: engaged, Revision: rev, Actor: actor, Reason: reason, At: st.At, Fresh: true}
	if _, err := s.log.Append(ctx, scope, audit.Entry{
		Kind: KindChanged, CorrelationID: key, Actor: actor, RequestID: requestID, Time: st.At,
		Payload: map[string]any{"scope": scopeName, "previous": prev, "current": cur, "reason": reason},
	}); err != nil {
		if !engaged {
			// Fail closed: an unaudited disengage is rolled back.
			roll, _ := json.Marshal(state{Engaged: true, Reason: "rollback: the disengage could not be audited", Actor: "system", At: st.At})
			if _, rerr := s.control.Put(context.WithoutCancel(ctx), key, roll, kv.PutOptions{Revision: rev}); rerr != nil {
				s.logger.Error("kill switch: roll back unaudited disengage", "scope", scopeName, "err", rerr)
			}
		}
		return Change{}, fmt.Errorf("killswitch: audit change of %s: %w", scopeName, err)
	}
	prop, err := s.awaitPropagation(ctx, rev, start)
	s.logger.Info("kill switch changed", "scope", scopeName, "engaged", engaged, "revision", rev, "actor", actor,
		"reason", reason, "confirmed", prop.Confirmed, "unconfirmed", prop.Unconfirmed, "waited_ms", prop.WaitedMS)
	return Change{Previous: prev, Current: cur, Propagation: prop}, err
}

// Propagate waits, like a switch change, until this node and every live
// peer have applied control revision rev (or until Bound): what a change of
// another control entry (an Applier's) returns after.
func (s *Switches) Propagate(ctx context.Context, rev uint64) (Propagation, error) {
	return s.awaitPropagation(ctx, rev, s.mono())
}

// awaitPropagation waits until this node's local copy and every live peer
// (heard from within Bound) have applied revision rev, or until Bound.
func (s *Switches) awaitPropagation(ctx context.Context, rev uint64, start time.Time) (Propagation, error) {
	deadline := time.Now().Add(Bound)
	// This node first: after Set returns, this node's gate sees the change.
	s.mu.Lock()
	for s.applied < rev && time.Now().Before(deadline) {
		waitCond(s.changed, deadline)
	}
	local := s.applied >= rev
	s.mu.Unlock()
	var p Propagation
	for {
		p = Propagation{Confirmed: []string{}, Unconfirmed: []string{}}
		if local {
			p.Confirmed = append(p.Confirmed, s.node)
		} else {
			p.Unconfirmed = append(p.Unconfirmed, s.node)
		}
		now := s.mono()
		s.peersMu.Lock()
		for name, pe := range s.heard {
			if name == s.node || now.Sub(pe.seen) > Bound {
				continue
			}
			if pe.applied >= rev {
				p.Confirmed = append(p.Confirmed, name)
			} else {
				p.Unconfirmed = append(p.Unconfirmed, name)
			}
		}
		s.peersMu.Unlock()
		if len(p.Unconfirmed) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	slices.Sort(p.Confirmed)
	slices.Sort(p.Unconfirmed)
	p.WaitedMS = s.mono().Sub(start).Milliseconds()
	if !local {
		return p, fmt.Errorf("killswitch: this node did not apply revision %d within %s: %w", rev, Bound, ErrStale)
	}
	return p, nil
}

// waitCond waits on c (whose lock is held) until a broadcast or deadline.
func waitCond(c *sync.Cond, deadline time.Time) {
	t := time.AfterFunc(time.Until(deadline), c.Broadcast)
	c.Wait()
	t.Stop()
}
