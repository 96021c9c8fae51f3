package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// finish makes an execution's end durable: the claim's final state, written
// over the revision that claimed it. Under a retention (Config.Retention)
// the intent is first rewritten as final with a TTL of Retention, then the
// claim with a TTL of twice that, so the intent always expires first and
// an execute of it can never find the key free. If the intent cannot be
// marked, the claim is kept for good instead. A cut between the two writes
// leaves the claim executing, that is in doubt, with no TTL: Resolve finds
// it by intent even after the intent expired.
func (g *Gate) finish(ctx context.Context, t tenant.ID, s stored, lkey string, c claim, rev uint64) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode claim: %w", err)
	}
	if g.cfg.Retention == 0 {
		_, err = g.cfg.Idempotency.Update(ctx, lkey, data, rev)
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
	if err := g.putFinal(ctx, tenant.KVSubject(tenant.IdempotencyBucket, lkey), data, rev, claimTTL); err != nil {
		return fmt.Errorf("record final claim: %w", err)
	}
	return nil
}

// expireIntent rewrites the stored intent as final, to expire after the
// retention.
func (g *Gate) expireIntent(ctx context.Context, t tenant.ID, s stored) error {
	s.Final = true
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode intent: %w", err)
	}
	return g.putFinal(ctx, tenant.KVSubject(tenant.IntentsBucket, tenant.IntentKey(t, s.Intent.ID)), data, 0, g.cfg.Retention)
}

// putFinal writes a key's last value: a subject rollup (earlier revisions,
// which carry no TTL, must not reappear when this one expires), over
// revision rev when rev > 0, expiring after ttl when ttl > 0. The KV API
// has no such write, so it is published on the bucket's subject.
func (g *Gate) putFinal(ctx context.Context, subject string, data []byte, rev uint64, ttl time.Duration) error {
	m := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: data}
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	var opts []jetstream.PublishOpt
	if rev > 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(rev))
	}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	if _, err := g.cfg.JS.PublishMsg(ctx, m, opts...); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: %w", jetstream.ErrKeyExists, err)
		}
		return err
	}
	return nil
}

// inDoubtIntent finds, among t's claims, the one an intent that has expired
// left executing, and returns a stand-in holding the intent's ID and
// idempotency key (the rest expired with it).
func (g *Gate) inDoubtIntent(ctx context.Context, t tenant.ID, intentID string) (stored, error) {
	lister, err := g.cfg.Idempotency.ListKeysFiltered(ctx, tenant.IdempotencyKey(t, "*"))
	if err != nil {
		return stored{}, storeErr("list idempotency claims", err)
	}
	defer lister.Stop() //nolint:errcheck // only stops the listing
	for key := range lister.Keys() {
		idem := strings.TrimPrefix(key, t.String()+".")
		c, _, err := g.claimOf(ctx, t, idem)
		if err != nil || c.IntentID != intentID {
			continue
		}
		return stored{Intent: contract.ActionIntent{IdempotencyKey: idem}}, nil
	}
	return stored{}, errNotFound
}
