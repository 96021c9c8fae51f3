package gate

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// PrincipalLookup resolves a principal ID to its current grants (the key
// registry); a revoked or unknown principal is an error.
type PrincipalLookup interface {
	Principal(ctx context.Context, id string) (*auth.Principal, error)
}

// RunWorker is the background executor: it consumes the work queue (a
// durable consumer shared by every node, so each item goes to one) and
// executes each approved intent through Execute, as the intent's proposer
// with the proposer's current grants. It returns when ctx ends.
func (g *Gate) RunWorker(ctx context.Context, work jetstream.Stream, principals PrincipalLookup) error {
	cons, err := work.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       tenant.WorkConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    5,
		FilterSubject: tenant.WorkSubjects,
	})
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(16, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(250 * time.Millisecond) // store unavailable: retry
			continue
		}
		for msg := range batch.Messages() {
			g.work(ctx, msg, principals)
		}
	}
	return nil
}

func (g *Gate) work(ctx context.Context, msg jetstream.Msg, principals PrincipalLookup) {
	var item WorkItem
	err := json.Unmarshal(msg.Data(), &item)
	var t tenant.ID
	if err == nil {
		t, err = tenant.Parse(item.Tenant)
	}
	if err != nil {
		g.cfg.Logger.ErrorContext(ctx, "worker: bad work item", "data", string(msg.Data()))
		_ = msg.Term()
		return
	}
	meta := Meta{RequestID: "worker-" + item.IntentID}
	s, err := g.load(ctx, t, item.IntentID)
	if err != nil {
		g.cfg.Logger.ErrorContext(ctx, "worker: load intent", "intent", item.IntentID, "err", err)
		g.settle(msg, err)
		return
	}
	p, err := principals.Principal(ctx, s.Intent.Proposer)
	switch {
	case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, auth.ErrExpired):
		// Revoked, expired or unknown proposer: the gate decides for the
		// proposer holding no grants, so the block is recorded like any other.
		p = &auth.Principal{ID: s.Intent.Proposer, Role: "none", Tenants: []string{}, Actions: []string{}}
	case err != nil:
		// The registry is unreachable: not a verdict on the proposer; ask
		// for the item again.
		g.cfg.Logger.WarnContext(ctx, "worker: read the proposer's grants", "intent", item.IntentID, "err", err)
		g.settle(msg, contract.Wrap(contract.CodeStoreUnavailable, "the key registry is unavailable", err))
		return
	}
	out, err := g.Execute(ctx, t, p, item.IntentID, meta)
	g.cfg.Logger.InfoContext(ctx, "worker executed", "tenant", t.String(), "intent", item.IntentID,
		"status", out.Result.Status, "duplicate", out.Duplicate, "err", errString(err))
	g.settle(msg, err)
}

// settle acknowledges a finished item and asks for redelivery only when the
// store was unavailable (bounded by MaxDeliver).
func (g *Gate) settle(msg jetstream.Msg, err error) {
	if err != nil && contract.ErrorCode(err) == contract.CodeStoreUnavailable {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	var ae *contract.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return err.Error()
}
