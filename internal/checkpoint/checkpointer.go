package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// KindKeyAnnounced is the system chain's record of a node that starts
// signing checkpoints with a key the store has not seen: its first start,
// or its first start after `exoarmur audit rotate-key`.
const KindKeyAnnounced = "checkpoint.key"

// ErrDiverged is wrapped when a chain no longer extends the last
// checkpoint this node signed or saw: its records were rewritten,
// removed, or the stream was recreated. The node signs nothing more of
// that chain until it restarts.
var ErrDiverged = errors.New("the audit chain no longer extends its last checkpoint")

// ErrEmpty is returned by Sign for a chain without records.
var ErrEmpty = errors.New("the audit chain has no records to checkpoint")

// Defaults of Config.
const (
	DefaultEvery    = 1000
	DefaultInterval = time.Minute
)

// Config wires a Checkpointer.
type Config struct {
	Audit *audit.Log
	Keys  *Keyring
	Store *Store
	// Witness receives a copy of every checkpoint (nil: none).
	Witness Witness
	// Trust adds keys (other nodes' public keys) to the ring's own: the
	// checkpoints they signed are accepted as the last seen.
	Trust audit.Trust
	// Every signs a tenant's chain after this many records this node
	// appended to it since its last checkpoint (0: no count trigger).
	Every int
	// Interval signs every chain that gained records on this node at
	// least this often (0: no timer).
	Interval time.Duration
	Now      func() time.Time
	Node     string
	Logger   *slog.Logger
}

// Checkpointer signs the chains' heads (see the package doc).
type Checkpointer struct {
	cfg   Config
	trust audit.Trust
	kick  chan struct{}

	mu      sync.Mutex
	tenants map[tenant.ID]*chainState

	signMu sync.Mutex // one signing at a time
}

type chainState struct {
	pending    int                 // records appended here since the last checkpoint
	last       contract.Checkpoint // the last checkpoint signed or seen (Seq 0: none)
	lastStream uint64              // the stream sequence of last's record, when known
	diverged   error

	// base is the furthest record known to extend last (verified by a
	// read, or last itself), and own the records this node appended
	// after it (bounded by maxOwn): from base, the records of own that
	// link one to the next are known without a read. A record another
	// node appended, or a head this node reloaded, leaves a gap: the next
	// signature reads the chain from base.
	base    position
	own     map[uint64]position
	ownLast uint64 // the highest sequence in own
}

// position is one record of a chain: its sequence, hash, previous hash
// and stream sequence (0: not known).
type position struct {
	seq        uint64
	hash, prev string
	stream     uint64
}

// maxOwn bounds the records a chain keeps in chainState.own; beyond it
// the next signature reads the chain.
const maxOwn = 1 << 16

// New returns a Checkpointer; Start loads what it knows, Run signs in the
// background.
func New(cfg Config) *Checkpointer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	trust := cfg.Keys.Trust()
	for id, k := range cfg.Trust {
		trust[id] = k
	}
	return &Checkpointer{cfg: cfg, trust: trust, kick: make(chan struct{}, 1), tenants: map[tenant.ID]*chainState{}}
}

// Trust is what this node verifies checkpoints with: its ring's keys and
// Config.Trust.
func (c *Checkpointer) Trust() audit.Trust { return c.trust }

// Keys describes the ring's keys.
func (c *Checkpointer) Keys() []KeyInfo { return c.cfg.Keys.Keys() }

func (c *Checkpointer) state(t tenant.ID) *chainState {
	st, ok := c.tenants[t]
	if !ok {
		st = &chainState{}
		c.tenants[t] = st
	}
	return st
}

// Appended follows a record this node stored (audit.Log.OnAppend). It
// does not block.
func (c *Checkpointer) Appended(a audit.Appended) {
	c.mu.Lock()
	st := c.state(a.Tenant)
	st.pending++
	if a.Seq > st.base.seq && len(st.own) < maxOwn {
		if st.own == nil {
			st.own = map[uint64]position{}
		}
		st.own[a.Seq] = position{seq: a.Seq, hash: a.Hash, prev: a.PrevHash, stream: a.StreamSeq}
		st.ownLast = max(st.ownLast, a.Seq)
	}
	full := c.cfg.Every > 0 && st.pending >= c.cfg.Every
	c.mu.Unlock()
	if full {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// Start announces the current key (a key new to the store is recorded in
// the system chain) and loads the last checkpoint of every chain from the
// store and the witness file (when the witness is one), keeping those
// that verify under Trust. A stored checkpoint that does not verify is
// logged: someone without the key wrote it.
func (c *Checkpointer) Start(ctx context.Context) error {
	s := c.cfg.Keys.Signer()
	created, err := c.cfg.Store.Announce(ctx, s.ID, audit.FormatPublicKey(s.Public()))
	if err != nil {
		return err
	}
	if created {
		var retired []string
		for _, k := range c.cfg.Keys.Keys() {
			if !k.Current {
				retired = append(retired, k.KeyID)
			}
		}
		if _, err := c.cfg.Audit.Append(ctx, tenant.System, audit.Entry{Kind: KindKeyAnnounced, Actor: "node:" + c.cfg.Node, Time: c.cfg.Now(),
			Payload: map[string]any{"key_id": s.ID, "public_key": audit.FormatPublicKey(s.Public()), "node": c.cfg.Node, "retired_key_ids": retired}}); err != nil {
			c.cfg.Logger.Warn("audit key: the new key could not be recorded in the system chain", "key_id", s.ID, "err", err.Error())
		}
		c.cfg.Logger.Info("audit key: signing checkpoints with a key new to the store", "key_id", s.ID, "public_key", audit.FormatPublicKey(s.Public()), "key_file", c.cfg.Keys.Path())
	}
	tenants, err := c.cfg.Audit.Tenants(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		for _, id := range c.trust.IDs() {
			cp, ok, err := c.cfg.Store.Latest(ctx, t, id)
			if err != nil {
				c.cfg.Logger.Error("audit checkpoints: a stored checkpoint cannot be read", "tenant", t.String(), "err", err.Error())
				continue
			}
			if ok {
				c.Observe(cp)
			}
		}
	}
	if fw, ok := c.cfg.Witness.(*fileWitness); ok {
		cps, err := ReadFile(fw.path)
		if err == nil {
			for _, cp := range Latest(cps) {
				c.Observe(cp)
			}
		}
	}
	return nil
}

// Observe remembers cp as the last checkpoint of its chain if it verifies
// under Trust and is beyond the one known.
func (c *Checkpointer) Observe(cp contract.Checkpoint) {
	if err := c.trust.Verify(cp); err != nil {
		c.cfg.Logger.Error("audit checkpoints: a checkpoint does not verify; it was not written by a trusted key (someone with write access to the store or the witness wrote it)", "tenant", cp.Tenant, "seq", cp.Seq, "err", err.Error())
		return
	}
	t, err := tenant.ParseChain(cp.Tenant)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state(t)
	if cp.Seq > st.last.Seq {
		st.last, st.lastStream = cp, 0
		st.base = position{seq: cp.Seq, hash: cp.RecordHash}
	}
}

// walk returns the furthest record known from base: base, then each of
// own that links to the one before (st locked).
func (st *chainState) walk(base position) position {
	p := base
	for {
		next, ok := st.own[p.seq+1]
		if !ok || next.prev != p.hash {
			return p
		}
		p = next
	}
}

// advance makes p, known to extend last, the base, and forgets the own
// records it covers (st locked).
func (st *chainState) advance(p position) {
	if p.seq < st.base.seq {
		return
	}
	st.base = p
	for seq := range st.own {
		if seq <= p.seq {
			delete(st.own, seq)
		}
	}
}

// Diverged says why t's chain no longer extends its last checkpoint on
// this node ("" while it does): the gate blocks every decision of t then
// (gate.Config.Chain).
func (c *Checkpointer) Diverged(t tenant.ID) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.tenants[t]; ok && st.diverged != nil {
		return st.diverged.Error()
	}
	return ""
}

// Seen returns the last checkpoint of t this node signed or saw.
func (c *Checkpointer) Seen(t tenant.ID) (contract.Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.tenants[t]
	if !ok || st.last.Seq == 0 {
		return contract.Checkpoint{}, false
	}
	return st.last, true
}

// Anchors are the checkpoints a live verification of t's chain must
// find in it: the last one this node signed or saw, and the last stored
// by each trusted key. A stored checkpoint that does not verify is
// returned too, so that the verification reports it.
func (c *Checkpointer) Anchors(ctx context.Context, t tenant.ID) ([]contract.Checkpoint, error) {
	var out []contract.Checkpoint
	if cp, ok := c.Seen(t); ok {
		out = append(out, cp)
	}
	for _, id := range c.trust.IDs() {
		cp, ok, err := c.cfg.Store.Latest(ctx, t, id)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, cp)
		}
	}
	return out, nil
}

// Latest returns the last checkpoint of t stored by any key.
func (c *Checkpointer) Latest(ctx context.Context, t tenant.ID) (contract.Checkpoint, bool, error) {
	return c.cfg.Store.Latest(ctx, t, "")
}

// Run signs in the background until ctx ends: every Interval the chains
// that gained records here, and at once a chain that gained Every.
func (c *Checkpointer) Run(ctx context.Context) {
	c.checkKnown(ctx)
	var tick <-chan time.Time
	if c.cfg.Interval > 0 {
		tk := time.NewTicker(c.cfg.Interval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			c.round(ctx, 1)
		case <-c.kick:
			c.round(ctx, max(c.cfg.Every, 1))
		}
	}
}

// checkKnown reads, once, every chain of which the node knows a
// checkpoint (from the store or its witness, at Start) and signs its head
// if it still extends that checkpoint: a node that restarts finds out by
// itself that a chain was rewritten or recreated while it was down, and
// its gate stops on it (Diverged).
func (c *Checkpointer) checkKnown(ctx context.Context) {
	c.mu.Lock()
	var known []tenant.ID
	for t, st := range c.tenants {
		if st.last.Seq > 0 {
			known = append(known, t)
		}
	}
	c.mu.Unlock()
	for _, t := range known {
		if _, err := c.Sign(ctx, t); err != nil && !errors.Is(err, ErrDiverged) && ctx.Err() == nil {
			c.cfg.Logger.Warn("audit checkpoint: the chain could not be checked against its last checkpoint at start; the next round tries again", "tenant", t.String(), "err", err.Error())
		}
	}
}

// Flush signs every chain that gained records here since its last
// checkpoint (a node that stops leaves its chains signed).
func (c *Checkpointer) Flush(ctx context.Context) { c.round(ctx, 1) }

// round signs the chains that gained at least min records here.
func (c *Checkpointer) round(ctx context.Context, min int) {
	c.mu.Lock()
	var due []tenant.ID
	for t, st := range c.tenants {
		if st.pending >= min && st.diverged == nil {
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		if _, err := c.Sign(ctx, t); err != nil && !errors.Is(err, ErrDiverged) && ctx.Err() == nil {
			c.cfg.Logger.Warn("audit checkpoint not signed; the next round tries again", "tenant", t.String(), "err", err.Error())
		}
	}
}

// Sign signs the head of t's chain as this node knows it to extend its
// last checkpoint: the records this node appended since, each linking to
// the one before, need no read; otherwise (records of another node, a
// first checkpoint) the chain is read from the last checkpoint's record
// and verified to the store's head. The checkpoint is stored and sent to
// the witness. It returns the last checkpoint unchanged when the chain has
// not grown since; ErrDiverged when it no longer extends the last
// checkpoint.
func (c *Checkpointer) Sign(ctx context.Context, t tenant.ID) (contract.Checkpoint, error) {
	c.signMu.Lock()
	defer c.signMu.Unlock()
	c.mu.Lock()
	st := c.state(t)
	from, div := st.last, st.diverged
	pending := st.pending
	base := st.base
	if base.seq < from.Seq || from.Seq == 0 && base.seq == 0 {
		base = position{seq: from.Seq, hash: from.RecordHash, stream: st.lastStream}
		if from.Seq == 0 {
			base.hash = contract.ZeroHash // a chain this node wrote from its first record needs no read
		}
	}
	head := st.walk(base)
	complete := head.seq == st.ownLast && head.seq > from.Seq // every record appended here is known
	c.mu.Unlock()
	if div != nil {
		return contract.Checkpoint{}, div
	}
	if !complete {
		// A gap, or nothing appended here: read the chain from base (its
		// record must still have its hash) to the store's head.
		at := contract.Checkpoint{Tenant: t.String(), Seq: base.seq, RecordHash: base.hash, Time: from.Time, KeyID: from.KeyID}
		seq, hash, streamSeq, err := c.extend(ctx, t, at, base.stream)
		if err != nil {
			if errors.Is(err, ErrDiverged) {
				c.diverge(t, err)
			}
			return contract.Checkpoint{}, err
		}
		c.mu.Lock()
		st.advance(position{seq: seq, hash: hash, stream: streamSeq})
		head = st.walk(st.base)
		c.mu.Unlock()
	}
	seq, hash, streamSeq := head.seq, head.hash, head.stream
	if from.Seq > 0 && seq == from.Seq {
		c.mu.Lock()
		st.pending -= min(pending, st.pending)
		c.mu.Unlock()
		return from, nil
	}
	cp, err := c.sign(ctx, t, seq, hash, streamSeq, true)
	if err != nil {
		return contract.Checkpoint{}, err
	}
	c.mu.Lock()
	st.pending -= min(pending, st.pending)
	c.mu.Unlock()
	return cp, nil
}

// sign signs record seq (hash) of t, known to extend the last checkpoint,
// stores the checkpoint, witnesses it and remembers it. onKnown says the
// record is the known head's (Sign); an export's (Vouch) becomes the base
// when it is beyond it (it was verified from the chain's first record).
func (c *Checkpointer) sign(ctx context.Context, t tenant.ID, seq uint64, hash string, streamSeq uint64, onKnown bool) (contract.Checkpoint, error) {
	cp, err := c.cfg.Keys.Signer().Sign(t.String(), seq, hash, c.cfg.Now())
	if err != nil {
		return contract.Checkpoint{}, err
	}
	c.mu.Lock()
	st := c.state(t)
	if cp.Seq > st.last.Seq {
		st.last, st.lastStream = cp, streamSeq
		if onKnown || st.base.seq < seq {
			st.advance(position{seq: seq, hash: hash, stream: streamSeq})
		}
	}
	c.mu.Unlock()
	metrics.Checkpoints.WithLabelValues("signed").Inc()
	var errs []error
	if err := c.cfg.Store.Put(ctx, cp); err != nil {
		metrics.Checkpoints.WithLabelValues("store_failed").Inc()
		errs = append(errs, err)
	}
	if c.cfg.Witness != nil {
		if err := c.cfg.Witness.Witness(ctx, cp); err != nil {
			metrics.Checkpoints.WithLabelValues("witness_failed").Inc()
			c.cfg.Logger.Warn("audit checkpoint: the witness did not take it; the next checkpoint is sent again", "tenant", t.String(), "seq", cp.Seq, "witness", c.cfg.Witness.String(), "err", err.Error())
		}
	}
	if len(errs) > 0 {
		// Signed and remembered here; the store did not take it.
		return cp, fmt.Errorf("audit checkpoint of %s at seq %d signed but not stored: %w", t, cp.Seq, errors.Join(errs...))
	}
	return cp, nil
}

func (c *Checkpointer) diverge(t tenant.ID, err error) {
	c.mu.Lock()
	st := c.state(t)
	first := st.diverged == nil
	st.diverged = err
	c.mu.Unlock()
	if first {
		metrics.Checkpoints.WithLabelValues("diverged").Inc()
		c.cfg.Logger.Error("AUDIT CHAIN TAMPERING: the chain in the store no longer extends the last checkpoint; this node signs no further checkpoint of it. "+
			"Compare the store with the witness copy and an export (exoarmur replay --from-export F --trusted-key PUB --checkpoint WITNESS) before trusting the chain",
			"tenant", t.String(), "err", err.Error())
	}
}

// extend reads t's chain from the record of checkpoint from (stream
// sequence hint, when known; from.Seq 0: from the chain's first record),
// checks that record still has from's hash and every later record links,
// and returns the head it reached.
func (c *Checkpointer) extend(ctx context.Context, t tenant.ID, from contract.Checkpoint, hint uint64) (seq uint64, hash string, streamSeq uint64, err error) {
	for {
		k := newChainCheck(t, from)
		var last uint64
		err := c.cfg.Audit.Follow(ctx, t, hint, func(sseq uint64, raw []byte) error {
			last = sseq
			return k.next(raw)
		})
		if err != nil && !errors.Is(err, errStop) {
			return 0, "", 0, err
		}
		if k.err == nil && !k.met && hint > 0 {
			hint = 0 // the stream sequence known no longer leads to the record: read the whole chain
			continue
		}
		if k.err != nil {
			return 0, "", 0, k.err
		}
		if !k.met && k.seen > from.Seq {
			return 0, "", 0, fmt.Errorf("%w: the chain has no record %d, which the checkpoint signed at %s by key %s covers",
				ErrDiverged, from.Seq, from.Time.Format(time.RFC3339), from.KeyID)
		}
		if !k.met {
			return 0, "", 0, fmt.Errorf("%w: the chain ends at record %d, before record %d of the checkpoint signed at %s by key %s",
				ErrDiverged, k.seen, from.Seq, from.Time.Format(time.RFC3339), from.KeyID)
		}
		seq, hash = k.v.Head()
		if seq == 0 {
			return 0, "", 0, ErrEmpty
		}
		return seq, hash, last, nil
	}
}

// errStop ends a read once the chain check failed.
var errStop = errors.New("stop")

// chainCheck verifies records of one chain, in order, from a checkpoint's
// record (or the first record) on.
type chainCheck struct {
	from contract.Checkpoint
	v    *audit.Verifier
	met  bool   // from's record was found with its hash (or from.Seq is 0)
	seen uint64 // the highest sequence read
	err  error
}

func newChainCheck(t tenant.ID, from contract.Checkpoint) *chainCheck {
	k := &chainCheck{from: from, v: audit.NewVerifier(t.String()), met: from.Seq == 0}
	return k
}

func (k *chainCheck) next(raw []byte) error {
	chk := audit.Check(raw)
	rec := chk.Rec
	k.seen = max(k.seen, rec.Seq)
	if !k.met {
		switch {
		case !chk.Parsed:
			return nil // before the checkpoint's record: checked when the whole chain is
		case rec.Seq < k.from.Seq:
			return nil
		case rec.Seq > k.from.Seq:
			// Started past it: the caller reads from the chain's start.
			return errStop
		case rec.Hash != k.from.RecordHash:
			k.err = fmt.Errorf("%w: record %d has hash %s, the checkpoint signed at %s by key %s says %s",
				ErrDiverged, rec.Seq, rec.Hash, k.from.Time.Format(time.RFC3339), k.from.KeyID, k.from.RecordHash)
			return errStop
		}
		k.met = true
		k.v.Resync(rec.Seq, rec.Hash)
		return nil
	}
	if _, err := k.v.NextChecked(chk); err != nil {
		k.err = fmt.Errorf("%w: %v", ErrDiverged, err)
		return errStop
	}
	return nil
}

// ChainCheck checks a chain as a reader streams it from its first record
// (an export) against the last checkpoint this node knows of it: the
// records up to that checkpoint's are covered by it (a verifier holding
// the checkpoint checks them), the checkpoint's record must still have its
// hash, and every record after it is verified, so that the checkpoint
// Vouch signs covers a chain that extends the node's last one.
type ChainCheck struct {
	c    *Checkpointer
	t    tenant.ID
	k    *chainCheck
	want contract.Checkpoint // the node's last checkpoint, which the chain must contain
	err  error
}

// Check starts a ChainCheck of t.
func (c *Checkpointer) Check(t tenant.ID) *ChainCheck {
	want, _ := c.Seen(t)
	return &ChainCheck{c: c, t: t, k: newChainCheck(t, want), want: want}
}

// Next checks the next record: raw as stored, rec its decoded envelope
// (audit.Log.ScanHeads); a record before the last checkpoint's is not
// rehashed.
func (cc *ChainCheck) Next(raw []byte, rec contract.AuditRecord) {
	if cc.err != nil {
		return
	}
	if !cc.k.met && rec.Seq < cc.want.Seq {
		cc.k.seen = max(cc.k.seen, rec.Seq)
		return
	}
	if err := cc.k.next(raw); err != nil {
		cc.err = cc.k.err
		if cc.err == nil { // the checkpoint's record was skipped over: it is missing
			cc.err = fmt.Errorf("%w: the chain has no record %d, which the checkpoint signed at %s by key %s covers",
				ErrDiverged, cc.want.Seq, cc.want.Time.Format(time.RFC3339), cc.want.KeyID)
		}
	}
}

// Vouch signs the checkpoint of the last record Next checked, if the
// chain contains the node's last checkpoint and verified after it (the
// checkpoint itself when the chain ends there); an error says why not.
func (cc *ChainCheck) Vouch(ctx context.Context) (contract.Checkpoint, error) {
	if cc.err == nil && !cc.k.met {
		cc.err = fmt.Errorf("%w: the chain ends at record %d, before record %d of the checkpoint signed at %s by key %s",
			ErrDiverged, cc.k.seen, cc.want.Seq, cc.want.Time.Format(time.RFC3339), cc.want.KeyID)
	}
	if cc.err != nil {
		if errors.Is(cc.err, ErrDiverged) {
			cc.c.diverge(cc.t, cc.err)
		}
		return contract.Checkpoint{}, cc.err
	}
	seq, hash := cc.k.v.Head()
	if seq == 0 {
		return contract.Checkpoint{}, ErrEmpty
	}
	cc.c.signMu.Lock()
	defer cc.c.signMu.Unlock()
	if last, ok := cc.c.Seen(cc.t); ok && last.Seq == seq && last.RecordHash == hash {
		return last, nil
	}
	return cc.c.sign(ctx, cc.t, seq, hash, 0, false)
}
