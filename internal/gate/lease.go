package gate

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/kv"
)

// Leases: a running execution's idempotency claim carries the node that
// runs it and a lease expiry, renewed by that node while the executor runs.
// Every node reads the same claim, so every node tells the same state:
// executing while the lease is live, in doubt once it lapsed without an
// outcome (the node died, lost the store, or its executor overran its
// deadline). Resolve is refused while the lease is live.

// DefaultLease is how long a claim's lease runs before its node renews it
// (renewed every third of it).
const DefaultLease = 10 * time.Second

// DefaultExecTimeout bounds every executor call.
const DefaultExecTimeout = time.Minute

// recordTimeout bounds each write made after the claim (the approval's
// consumption, the audit records, the outcome). They are detached from the
// caller: a client that goes away never stops them.
const recordTimeout = 30 * time.Second

// lease renews a claim while its execution runs.
type lease struct {
	g    *Gate
	key  string
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	c    claim
	rev  uint64
	lost bool // the claim changed under us (a resolve after a lapse)
}

// hold starts renewing the claim c, written at revision rev.
func (g *Gate) hold(ctx context.Context, key string, c claim, rev uint64) *lease {
	l := &lease{g: g, key: key, c: c, rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew(ctx)
	return l
}

func (l *lease) renew(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.g.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		c := l.c
		c.LeaseUntil = l.g.cfg.Now().UTC().Add(l.g.cfg.Lease)
		data, err := encodeValue(c)
		var rev uint64
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, l.g.cfg.Lease/3)
			rev, err = l.g.cfg.Idempotency.Put(wctx, l.key, data, kv.PutOptions{Revision: l.rev})
			cancel()
		}
		switch {
		case err == nil:
			l.c, l.rev = c, rev
		case errors.Is(err, kv.ErrConflict):
			// Lost to another write, or our own earlier renewal landed
			// although its answer timed out: still ours if the stored claim
			// is this execution, executing on this node.
			if cur, curRev, ok := l.reread(ctx); ok {
				l.c, l.rev = cur, curRev
			} else {
				l.lost = true
			}
		default:
			// The store is unreachable: try again next tick. Should the
			// lease lapse meanwhile, every node reads the claim in doubt.
			l.g.cfg.Logger.WarnContext(ctx, "renew execution lease", "key", l.key, "err", err)
		}
		lost := l.lost
		l.mu.Unlock()
		if lost {
			l.g.cfg.Logger.ErrorContext(ctx, "execution lease lost: the claim changed while the execution ran", "key", l.key)
			return
		}
	}
}

// reread returns the stored claim if it is still this execution's: the
// same intent and start, executing on this node.
func (l *lease) reread(ctx context.Context) (claim, uint64, bool) {
	wctx, cancel := context.WithTimeout(ctx, l.g.cfg.Lease/3)
	defer cancel()
	e, err := l.g.cfg.Idempotency.Get(wctx, l.key)
	if err != nil {
		return claim{}, 0, false
	}
	var cur claim
	if json.Unmarshal(e.Value, &cur) != nil {
		return claim{}, 0, false
	}
	mine := cur.State == StateExecuting && cur.Node == l.c.Node && cur.IntentID == l.c.IntentID && cur.StartedAt.Equal(l.c.StartedAt)
	return cur, e.Revision, mine
}

// release stops renewing and returns the claim and revision to write the
// outcome over, and whether the lease was still ours.
func (l *lease) release() (claim, uint64, bool) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c, l.rev, !l.lost
}

// abandon stops renewing without waiting: the lease lapses and the
// execution reads in doubt on every node.
func (l *lease) abandon() { close(l.stop) }

// live reports whether a claim still executing holds a live lease at now.
// A lease counts as lapsed one further lease after its expiry, so a node
// whose clock runs ahead of the renewing node's by less than a lease never
// reads a running execution in doubt. A claim from before leases (no
// expiry) is in doubt.
func (c claim) live(now time.Time) bool {
	return c.State == StateExecuting && now.Before(c.LeaseUntil.Add(c.Lease))
}
