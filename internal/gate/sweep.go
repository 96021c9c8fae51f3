package gate

// The repair of missing outcome records (this file). An execution whose
// effect ran and whose result is stored, but whose execution.succeeded or
// execution.failed record could not be appended (a stream leader lost at
// that moment), is marked on its claim (claim.Unaudited) and noted under
// tenant.RepairKey. The record is then written by whichever comes first:
// the executing node's retries (repairLater), the next execute of the
// intent (repeat), a read of the intent or a listing of in-doubt
// executions that sees the mark, or the sweep every node runs (Sweep,
// RunSweeper), which finds the notes; so the chain always ends an
// execution with its outcome, also when the executing node died. repair's
// compare-and-set on the claim keeps it to one record however many try.

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// noteUnaudited notes, for the sweep, the execution of idem whose outcome
// record is missing. A note that cannot be written is logged: the mark on
// the claim still gets it repaired by a repeat or a read.
func (g *Gate) noteUnaudited(ctx context.Context, t tenant.ID, idem, intentID string) {
	wctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if _, err := g.cfg.Idempotency.Put(wctx, tenant.RepairKey(t, idem), []byte(intentID), kv.PutOptions{}); err != nil {
		g.cfg.Logger.ErrorContext(ctx, "note a missing outcome record for the sweep; a repeat or a read of the intent still writes it", "tenant", t.String(), "intent", intentID, "err", err)
	}
}

// Sweep writes the outcome record of every execution noted as missing
// one, and removes notes whose claim needs none (repaired meanwhile). It
// returns how many records it wrote and the first error (it goes on past
// one). A record another node wrote meanwhile counts as written.
func (g *Gate) Sweep(ctx context.Context) (int, error) {
	keys, err := g.cfg.Idempotency.Keys(ctx, tenant.RepairKeyFilter)
	if err != nil {
		return 0, storeErr("list the missing outcome records", err)
	}
	var first error
	n := 0
	for _, key := range keys {
		t, idem, err := tenant.ParseRepairKey(key)
		if err != nil {
			continue // not a note this version writes
		}
		repaired, err := g.repairClaim(ctx, t, idem)
		switch {
		case err != nil:
			first = cmp.Or(first, err)
		case repaired:
			n++
		default:
			if err := g.cfg.Idempotency.Delete(ctx, key, 0); err != nil {
				first = cmp.Or(first, err)
			}
		}
	}
	return n, first
}

// repairClaim writes the missing outcome record of idem's execution, if
// its claim is marked as missing one (repaired reports whether it wrote).
func (g *Gate) repairClaim(ctx context.Context, t tenant.ID, idem string) (repaired bool, err error) {
	c, rev, err := g.claimOf(ctx, t, idem)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !needsRepair(c) {
		return false, nil
	}
	in := contract.ActionIntent{ID: c.IntentID, IdempotencyKey: idem}
	_, err = g.repair(ctx, t, in, c, rev, *c.Decision, cmp.Or(c.Actor, "system"), Meta{})
	return err == nil, err
}

// needsRepair: c is a finished execution whose outcome record is missing.
func needsRepair(c claim) bool {
	return c.Unaudited && c.Result != nil && c.Decision != nil && (c.State == StateSucceeded || c.State == StateFailed)
}

// repairSeen writes the missing outcome record of a claim a read came
// across (Get, ListInDoubt). The read answers either way: a failure is
// logged, and the mark stays for the next try.
func (g *Gate) repairSeen(ctx context.Context, t tenant.ID, idem string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if _, err := g.repairClaim(rctx, t, idem); err != nil {
		g.cfg.Logger.WarnContext(ctx, "a read came across a missing outcome record and could not write it yet", "tenant", t.String(), "idempotency_key", idem, "err", err)
	}
}

// RunSweeper runs Sweep every every until ctx ends, logging what it
// repaired and what failed.
func (g *Gate) RunSweeper(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := g.Sweep(ctx)
		if n > 0 {
			g.cfg.Logger.InfoContext(ctx, "sweep wrote missing outcome records", "records", n)
		}
		if err != nil && ctx.Err() == nil {
			g.cfg.Logger.WarnContext(ctx, "sweep of missing outcome records; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
