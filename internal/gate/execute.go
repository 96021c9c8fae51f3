package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/store"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// KindExecuteRefused is the audit kind of an execute by a principal other
// than the intent's proposer (refused before any decision).
const KindExecuteRefused = "execution.refused"

// Outcome is what an execute call returns.
type Outcome struct {
	Decision  contract.Decision        `json:"decision"`
	Result    contract.ExecutionResult `json:"result"`
	Duplicate bool                     `json:"duplicate"`
}

// Execute is the one gate. It gathers the decision input (failing closed on
// any error), decides, records the decision, claims the idempotency key,
// audits the start, runs the executor with a freshly minted Permit, and
// audits the finish. A blocked decision returns a *contract.Error with code
// blocked and the reason codes. A repeat of a finished execution returns the
// first result without touching the executor.
func (g *Gate) Execute(ctx context.Context, t tenant.ID, p *auth.Principal, intentID string, meta Meta) (Outcome, error) {
	if err := admit(t, p); err != nil {
		return Outcome{}, err
	}
	s, err := g.load(ctx, t, intentID)
	if err != nil {
		return Outcome{}, err
	}
	in := s.Intent
	// Execution is bound to the proposer: its identity and, since p is
	// authenticated now, its current grants. Anyone else is refused,
	// audited, before a decision is made.
	if p.ID != in.Proposer {
		if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
			Kind: KindExecuteRefused, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID, Time: g.cfg.Now().UTC(),
			Payload: map[string]string{"intent_id": in.ID, "proposer": in.Proposer, "principal": p.ID, "reason": ReasonNotProposer},
		}); err != nil {
			return Outcome{}, storeErr("audit access.denied", err)
		}
		return Outcome{}, &contract.Error{Code: contract.CodeForbidden, Message: "only the principal that proposed this intent may execute it", Reasons: []string{ReasonNotProposer}}
	}
	input, err := g.input(ctx, t, p, in)
	if err != nil {
		return Outcome{}, err
	}
	d := Decide(input)

	kind := audit.KindGateAllowed
	if d.Verdict != contract.Allow {
		kind = audit.KindGateBlocked
	}
	decRec, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: kind, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: input.Time, Payload: DecisionPayload{input, d},
	})
	if err != nil {
		return Outcome{}, storeErr("audit decision", err)
	}
	metrics.Decisions.WithLabelValues(d.Verdict, firstReason(d.Reasons)).Inc()
	if d.Verdict != contract.Allow {
		g.saveDecision(ctx, t, s, d)
		g.cfg.Logger.InfoContext(ctx, "gate blocked", "tenant", t.String(), "intent", in.ID, "reasons", d.Reasons, "request_id", meta.RequestID)
		return Outcome{Decision: d}, &contract.Error{Code: contract.CodeBlocked, Message: "the gate blocked this execution", Reasons: d.Reasons}
	}

	// Claim the idempotency key with a create-only write.
	lkey := tenant.IdempotencyKey(t, in.IdempotencyKey)
	c := claim{IntentID: in.ID, IntentHash: in.Hash, State: StateExecuting, Node: g.cfg.Node, StartedAt: input.Time, Decision: &d}
	data, err := json.Marshal(c)
	if err != nil {
		return Outcome{}, fmt.Errorf("execute: encode claim: %w", err)
	}
	rev, err := g.cfg.Idempotency.Create(ctx, lkey, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return g.repeat(ctx, t, p, in, d, meta)
	}
	if err != nil {
		return Outcome{}, storeErr("claim idempotency key", err)
	}
	g.inflight.Store(lkey, struct{}{})
	defer g.inflight.Delete(lkey)

	// Consume the approval: compare-and-set on the revision this decision
	// read, so it authorizes exactly this one execution. From here on the
	// claim is never released: an interruption leaves it in doubt.
	consumed := false
	if input.Approval.Status == approval.StatusApproved {
		if err := g.cfg.Approvals.Consume(ctx, t, in.ID, input.Approval.Revision, p.ID, meta.RequestID, input.Time); err != nil {
			if derr := g.cfg.Idempotency.Delete(ctx, lkey, jetstream.LastRevision(rev)); derr != nil {
				g.cfg.Logger.ErrorContext(ctx, "release claim after approval conflict", "key", lkey, "err", derr)
			}
			if errors.Is(err, approval.ErrConsumed) {
				return Outcome{Decision: d}, contract.Wrap(contract.CodeConflict, "the approval changed after the decision; execute again", err)
			}
			return Outcome{}, storeErr("consume approval", err)
		}
		consumed = true
	}

	start := contract.ExecutionResult{
		SchemaVersion: contract.SchemaVersion, Tenant: t.String(), IntentID: in.ID,
		IdempotencyKey: in.IdempotencyKey, StartedAt: input.Time,
	}
	if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: audit.KindExecutionStarted, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: input.Time, Payload: map[string]any{"intent_id": in.ID, "idempotency_key": in.IdempotencyKey, "decision_hash": decRec.PayloadHash},
	}); err != nil {
		// Nothing ran. Without a consumed approval the claim is released so
		// a retry can proceed; with one, it stays and reads in doubt.
		if !consumed {
			if derr := g.cfg.Idempotency.Delete(ctx, lkey, jetstream.LastRevision(rev)); derr != nil {
				g.cfg.Logger.ErrorContext(ctx, "release claim after failed audit", "key", lkey, "err", derr)
			}
		}
		return Outcome{}, storeErr("audit execution.started", err)
	}

	res := g.run(ctx, in, t, decRec.PayloadHash, start)

	c.State, c.Result = res.Status, &res
	if err := g.finish(ctx, t, s, lkey, c, rev); err != nil {
		// The effect happened but its result is not durable: the claim stays
		// "executing" and is reported in doubt; it is never re-run.
		g.cfg.Logger.ErrorContext(ctx, "record execution result", "key", lkey, "err", err)
		return Outcome{}, storeErr("record execution result (execution is now in doubt)", err)
	}
	finKind := audit.KindExecutionSucceeded
	if res.Status != contract.StatusSucceeded {
		finKind = audit.KindExecutionFailed
	}
	if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: finKind, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: res.FinishedAt, Payload: res,
	}); err != nil {
		return Outcome{}, storeErr("audit execution result", err)
	}
	g.cfg.Logger.InfoContext(ctx, "executed", "tenant", t.String(), "intent", in.ID, "action", in.Action,
		"status", res.Status, "request_id", meta.RequestID)
	return Outcome{Decision: d, Result: res}, nil
}

// run mints the permit and calls the executor. Only here is a Permit made.
func (g *Gate) run(ctx context.Context, in contract.ActionIntent, t tenant.ID, decisionHash string, res contract.ExecutionResult) contract.ExecutionResult {
	permit := &Permit{tenant: t, intent: in, decision: decisionHash}
	ex, ok := g.cfg.Executors.Lookup(in.Action)
	var out map[string]string
	var err error
	start := time.Now()
	defer func() {
		metrics.ExecutionSeconds.WithLabelValues(in.Action, res.Status).Observe(time.Since(start).Seconds())
	}()
	if !ok {
		err = fmt.Errorf("no executor registered for %q", in.Action)
	} else {
		out, err = ex.Run(ctx, permit)
	}
	res.Output = out
	res.FinishedAt = g.cfg.Now().UTC()
	res.Status = contract.StatusSucceeded
	if err != nil {
		res.Status = contract.StatusFailed
		res.Error = err.Error()
	}
	return res
}

func firstReason(r []string) string {
	if len(r) == 0 {
		return ""
	}
	return r[0]
}

// repeat answers an execute whose idempotency key is already claimed.
func (g *Gate) repeat(ctx context.Context, t tenant.ID, p *auth.Principal, in contract.ActionIntent, d contract.Decision, meta Meta) (Outcome, error) {
	c, _, err := g.claimOf(ctx, t, in.IdempotencyKey)
	if err != nil {
		return Outcome{}, storeErr("load idempotency claim", err)
	}
	if c.IntentID != in.ID || c.IntentHash != in.Hash {
		return Outcome{}, contract.Errorf(contract.CodeConflict, "idempotency key is claimed by a different intent")
	}
	state := g.claimState(t, in.IdempotencyKey, c)
	if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: audit.KindExecutionDuplicate, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: g.cfg.Now().UTC(), Payload: map[string]any{"intent_id": in.ID, "idempotency_key": in.IdempotencyKey, "state": state},
	}); err != nil {
		return Outcome{}, storeErr("audit execution.duplicate", err)
	}
	switch {
	case c.Result != nil && (state == StateSucceeded || state == StateFailed):
		return Outcome{Decision: d, Result: *c.Result, Duplicate: true}, nil
	case state == StateInDoubt:
		return Outcome{Decision: d}, contract.Errorf(contract.CodeInDoubt,
			"execution started at %s on node %q and never finished; it is in doubt and will not be re-run", c.StartedAt.Format("2006-01-02T15:04:05Z07:00"), c.Node)
	default:
		return Outcome{Decision: d}, contract.Errorf(contract.CodeConflict, "execution of this intent is in progress")
	}
}

// saveDecision records a blocking decision on the stored intent (an
// allowing one travels in the idempotency claim). The audit record is the
// durable truth; this copy only serves GET, so a failure is logged, not
// fatal. It writes only over the revision it read, and never over a final
// record: rewriting one would drop its expiry (see Config.Retention).
func (g *Gate) saveDecision(ctx context.Context, t tenant.ID, s stored, d contract.Decision) {
	if s.Final {
		return
	}
	s.LastDecision = &d
	data, err := json.Marshal(s)
	switch key := tenant.IntentKey(t, s.Intent.ID); {
	case err != nil:
	case g.cfg.Retention == 0:
		_, err = g.cfg.Intents.Update(ctx, key, data, s.rev)
	default: // every write of an intent carries the retention's TTL
		_, err = store.Put(ctx, g.cfg.JS, tenant.IntentsBucket, key, data, store.PutOptions{Revision: s.rev, TTL: g.cfg.Retention})
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		g.cfg.Logger.DebugContext(ctx, "save last decision: the intent changed meanwhile; not saved", "intent", s.Intent.ID)
		return
	}
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "save last decision", "intent", s.Intent.ID, "err", err)
	}
}
