// Package killswitch holds the global and per-tenant kill switches: durable,
// revisioned entries in a JetStream KV bucket, mirrored into a watched local
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/audit"
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

// Switches is a node's view of the kill switches.
type Switches struct {
	mono   func() time.Time // real clock: freshness, peers, deadlines
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	nc     *nats.Conn
	log    *audit.Log
	now    func() time.Time
	logger *slog.Logger
	node   string // unique per process: name/random

	mu        sync.RWMutex
	states    map[string]entry // control key -> last applied entry
	applied   uint64           // highest stream sequence applied
	lastFresh time.Time        // time of the last probe the watcher had caught up with
	started   bool
	changed   *sync.Cond // broadcast on every apply

	peersMu sync.Mutex
	peers   map[string]peer

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
	KV     jetstream.KeyValue
	JS     jetstream.JetStream
	NC     *nats.Conn
	Audit  *audit.Log
	Now    func() time.Time // clock for the recorded time of a change (freshness always uses the real clock)
	Node   string
	Logger *slog.Logger
}

// Start loads the switches, starts the watcher, the freshness probe and the
// heartbeat, and returns once the first load is complete (or ctx ends).
func Start(ctx context.Context, cfg Config) (*Switches, error) {
	if cfg.KV == nil || cfg.JS == nil || cfg.NC == nil || cfg.Audit == nil {
		return nil, errors.New("killswitch: KV, JetStream, connection and audit log are required")
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
		mono: time.Now,
		kv:   cfg.KV, js: cfg.JS, nc: cfg.NC, log: cfg.Audit, now: cfg.Now, logger: cfg.Logger,
		node:   cfg.Node + "/" + hex.EncodeToString(rnd[:]),
		states: map[string]entry{}, peers: map[string]peer{}, done: make(chan struct{}),
	}
	s.changed = sync.NewCond(&s.mu)
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("killswitch: watch: %w", err)
	}
	sub, err := s.nc.Subscribe(tenant.ControlAppliedSubject, s.onPeer)
	if err != nil {
		cancel()
		_ = w.Stop()
		return nil, fmt.Errorf("killswitch: subscribe: %w", err)
	}
	initial := make(chan struct{})
	go s.watch(wctx, w, initial)
	go func() {
		defer close(s.done)
		defer sub.Unsubscribe() //nolint:errcheck // shutting down
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

func (s *Switches) watch(ctx context.Context, w jetstream.KeyWatcher, initial chan struct{}) {
	defer w.Stop() //nolint:errcheck // shutting down
	once := sync.OnceFunc(func() { close(initial) })
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // end of the initial values
				s.mu.Lock()
				s.started = true
				s.mu.Unlock()
				once()
				continue
			}
			s.apply(e)
		}
	}
}

func (s *Switches) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	switch e.Operation() {
	case jetstream.KeyValuePut:
		var st state
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			// Unreadable state is engaged state.
			st = state{Engaged: true, Reason: "unreadable stored state: " + err.Error(), Actor: "system"}
		}
		s.states[e.Key()] = entry{st, e.Revision()}
	default: // deleted or purged: back to the default, engaged
		delete(s.states, e.Key())
	}
	s.applied = max(s.applied, e.Revision())
	applied := s.applied
	if scope, err := tenant.SwitchKeyTenant(e.Key()); err == nil {
		name := scope.String()
		if scope == tenant.System {
			name = ScopeGlobal
		}
		engaged := 1.0
		if st, ok := s.states[e.Key()]; ok && !st.st.Engaged {
			engaged = 0
		}
		metrics.KillSwitchEngaged.WithLabelValues(name).Set(engaged)
	}
	s.changed.Broadcast()
	s.mu.Unlock()
	s.announce(applied)
}

// announce tells the other nodes which revision this node has applied.
func (s *Switches) announce(applied uint64) {
	b, _ := json.Marshal(peerMsg{Node: s.node, Applied: applied}) // plain struct: cannot fail
	_ = s.nc.Publish(tenant.ControlAppliedSubject, b)             // best effort; heartbeats repeat it
}

type peerMsg struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
}

func (s *Switches) onPeer(m *nats.Msg) {
	var p peerMsg
	if json.Unmarshal(m.Data, &p) != nil || p.Node == "" {
		return
	}
	s.peersMu.Lock()
	s.peers[p.Node] = peer{seen: s.mono(), applied: p.Applied}
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

// probe confirms freshness: it reads the control stream's last sequence and,
// if the watcher has applied at least that much, records the probe's start
// time as the moment the local copy was known current.
func (s *Switches) probe(ctx context.Context) {
	start := s.mono()
	pctx, cancel := context.WithTimeout(ctx, Bound/2)
	defer cancel()
	str, err := s.js.Stream(pctx, tenant.ControlStream)
	if err != nil {
		return
	}
	info, err := str.Info(pctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started && s.applied >= info.State.LastSeq {
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
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			prev = Reading{Scope: scopeName, Engaged: true, Fresh: true}
			rev, err = s.kv.Create(ctx, key, data)
		case err != nil:
			return Change{}, fmt.Errorf("killswitch: read %s: %w", scopeName, err)
		default:
			var old state
			if json.Unmarshal(e.Value(), &old) != nil {
				old = state{Engaged: true}
			}
			prev = Reading{Scope: scopeName, Engaged: old.Engaged, Revision: e.Revision(), Actor: old.Actor, Reason: old.Reason, At: old.At, Fresh: true}
			rev, err = s.kv.Update(ctx, key, data, e.Revision())
		}
		if err == nil {
			break
		}
		if attempt < 8 && (errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err)) {
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
			if _, rerr := s.kv.Update(context.WithoutCancel(ctx), key, roll, rev); rerr != nil {
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

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
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
		for name, pe := range s.peers {
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
