package gate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// finish makes an execution's end durable: the claim's final state, written
// over the revision that claimed it. Under a retention (Config.Retention)
// the intent is first rewritten as final with a TTL of Retention, then the
// claim with a TTL of twice that, so the intent always expires first and
// an execute of it can never find the key free. Both writes are subject
// rollups: no earlier revision without a TTL (the claim's first) may
// reappear when they expire. If the intent cannot be marked, the claim is
// kept for good instead. A claim cut before its final write stays
// executing, that is in doubt, with no TTL, while its intent may expire:
// Resolve finds it by intent.
func (g *Gate) finish(ctx context.Context, t tenant.ID, s stored, lkey string, c claim, rev uint64) error {
	data, err := encodeValue(c)
	if err != nil {
		return fmt.Errorf("encode claim: %w", err)
	}
	if g.cfg.Retention == 0 {
		_, err = g.cfg.Idempotency.Put(ctx, lkey, data, kv.PutOptions{Revision: rev})
		return err
	}
	claimTTL := 2 * g.cfg.Retention
	if s.Intent.ID != "" { // "" when the intent already expired (Resolve)
		if err := g.expireIntent(ctx, t, s); err != nil {
			g.cfg.Logger.WarnContext(ctx, "retention: the intent could not be marked to expire; its claim is kept for good",
				"tenant", t.String(), "intent", s.Intent.ID, "err", err)
			claimTTL = 0
		}
	}
	if _, err := g.cfg.Idempotency.Put(ctx, lkey, data, kv.PutOptions{Rollup: true, Revision: rev, TTL: claimTTL}); err != nil {
		return fmt.Errorf("record final claim: %w", err)
	}
	return nil
}

// expireIntent rewrites the stored intent as final, to expire after the
// retention. It does not compare revisions: whatever was written since the
// intent was read (a blocked decision) is superseded.
func (g *Gate) expireIntent(ctx context.Context, t tenant.ID, s stored) error {
	s.Final = true
	data, err := encodeValue(s)
	if err != nil {
		return fmt.Errorf("encode intent: %w", err)
	}
	_, err = g.cfg.Intents.Put(ctx, tenant.IntentKey(t, s.Intent.ID), data, kv.PutOptions{Rollup: true, TTL: g.cfg.Retention})
	return err
}

// inDoubtIntent finds, among t's claims, the one an intent that has expired
// left executing, and returns a stand-in holding the intent's ID and
// idempotency key (the rest expired with it).
func (g *Gate) inDoubtIntent(ctx context.Context, t tenant.ID, intentID string) (stored, error) {
	keys, err := g.cfg.Idempotency.Keys(ctx, tenant.IdempotencyKey(t, "*"))
	if err != nil {
		return stored{}, storeErr("list idempotency claims", err)
	}
	for _, key := range keys {
		idem := strings.TrimPrefix(key, t.String()+".")
		c, _, err := g.claimOf(ctx, t, idem)
		if errors.Is(err, kv.ErrNotFound) || (err == nil && c.IntentID != intentID) {
			continue
		}
		if err != nil {
			return stored{}, storeErr("load idempotency claim", err)
		}
		return stored{Intent: contract.ActionIntent{IdempotencyKey: idem}}, nil
	}
	return stored{}, errNotFound
}
