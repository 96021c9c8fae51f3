package gate

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// PrincipalLookup resolves a principal ID to its current grants (the key
// registry); a revoked or unknown principal is an error.
type PrincipalLookup interface {
	Principal(ctx context.Context, id string) (*auth.Principal, error)
}

// WorkQueue is the work queue of approved intents (tenant.WorkStream) as
// the gate uses it: DecideApproval enqueues, RunWorker consumes.
// natsstore.Queue implements it on JetStream without importing the gate:
// WorkConsumer and Delivery are aliases of interface literals, which the
// store adapter declares identically, so both name the same types.
type WorkQueue interface {
	// Enqueue stores data on subject once per id: another Enqueue of id
	// within the queue's duplicate window stores nothing and succeeds.
	Enqueue(ctx context.Context, subject string, data []byte, id string) error
	// Consumer creates or updates the durable consumer name on the
	// subjects matching filter and binds it; every node binds the same
	// one, so each item goes to one node. A delivery not settled within
	// ackWait is delivered again; an item is delivered at most
	// maxDeliver times.
	Consumer(ctx context.Context, name, filter string, ackWait time.Duration, maxDeliver int) (WorkConsumer, error)
}

// WorkConsumer hands out the queue's items.
type WorkConsumer = interface {
	// Fetch asks for up to n items and yields each as it arrives,
	// waiting up to wait in all.
	Fetch(n int, wait time.Duration) (iter.Seq[Delivery], error)
}

// Delivery is one delivered item; the worker settles it once.
type Delivery = interface {
	Data() []byte
	Ack() error                    // done
	Nak(delay time.Duration) error // deliver it again after delay
	Term() error                   // never deliver it again
}

// The worker's delivery bounds: an execution not settled within
// workAckWait is delivered again, an item at most workMaxDeliver times.
const (
	workAckWait    = time.Minute
	workMaxDeliver = 5
)

// RunWorker is the background executor: it consumes the work queue
// (Config.Work; a durable consumer shared by every node, so each item goes
// to one) and executes each approved intent through Execute, as the
// intent's proposer with the proposer's current grants. It returns when
// ctx ends.
func (g *Gate) RunWorker(ctx context.Context, principals PrincipalLookup) error {
	if g.cfg.Work == nil {
		return errors.New("gate: the worker needs a work queue (Config.Work)")
	}
	cons, err := g.cfg.Work.Consumer(ctx, tenant.WorkConsumer, tenant.WorkSubjects, workAckWait, workMaxDeliver)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		items, err := cons.Fetch(16, time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(250 * time.Millisecond) // store unavailable: retry
			continue
		}
		for d := range items {
			g.work(ctx, d, principals)
		}
	}
	return nil
}

func (g *Gate) work(ctx context.Context, msg Delivery, principals PrincipalLookup) {
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
// store was unavailable (bounded by workMaxDeliver).
func (g *Gate) settle(msg Delivery, err error) {
	if err != nil && contract.ErrorCode(err) == contract.CodeStoreUnavailable {
		_ = msg.Nak(time.Second)
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
