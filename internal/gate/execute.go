package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/metrics"
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
			return Outcome{}, writeErr("record the refusal", "the action did not run", err)
		}
		return Outcome{}, &contract.Error{Code: contract.CodeForbidden, Message: "only the principal that proposed this intent may execute it", Reasons: []string{ReasonNotProposer}}
	}
	input, bundle, err := g.input(ctx, t, p, in, s.Approval)
	if err != nil {
		return Outcome{}, err
	}
	d := Decide(input, bundle, g.cfg.Actions)

	kind := audit.KindGateAllowed
	if d.Verdict != contract.Allow {
		kind = audit.KindGateBlocked
	}
	decRec, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: kind, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: input.Time, Payload: DecisionPayload{input, d},
	})
	if err != nil {
		return Outcome{}, writeErr("record the decision", notRun, err)
	}
	metrics.Decisions.WithLabelValues(d.Verdict, firstReason(d.Reasons)).Inc()
	g.shadowed(ctx, t, input, d, kind, p.ID, meta.RequestID)
	if d.Verdict != contract.Allow {
		g.saveDecision(ctx, t, s, d)
		g.cfg.Logger.InfoContext(ctx, "gate blocked", "tenant", t.String(), "intent", in.ID, "reasons", d.Reasons, "request_id", meta.RequestID)
		return Outcome{Decision: d}, &contract.Error{Code: contract.CodeBlocked, Message: "the gate blocked this execution", Reasons: d.Reasons}
	}

	// Claim the idempotency key with a create-only write.
	lkey := tenant.IdempotencyKey(t, in.IdempotencyKey)
	c := claim{IntentID: in.ID, IntentHash: in.Hash, State: StateExecuting, Node: g.cfg.Node, StartedAt: input.Time, Decision: &d,
		LeaseUntil: input.Time.Add(g.cfg.Lease), Lease: g.cfg.Lease}
	data, err := encodeValue(c)
	if err != nil {
		return Outcome{}, fmt.Errorf("execute: encode claim: %w", err)
	}
	rev, err := g.cfg.Idempotency.Put(ctx, lkey, data, kv.PutOptions{Create: true})
	if errors.Is(err, kv.ErrExists) {
		return g.repeat(ctx, t, p, in, d, meta)
	}
	if err != nil {
		return Outcome{}, writeErr("claim the idempotency key", notRun+" (a claim stored without its acknowledgement reads in doubt once its lease lapses)", err)
	}
	g.quotaAdd(t, counts{pending: -1}) // its execution started: no longer pending
	// The key is ours. From here on nothing listens to the caller: a client
	// that goes away (or a cancelled context) never cuts the consumption,
	// the effect or the writes that record it. Each step has its own bound.
	detached := context.WithoutCancel(ctx)
	l := g.hold(detached, lkey, c, rev)
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(detached, recordTimeout) }

	// Consume the approval: compare-and-set on the revision this decision
	// read, so it authorizes exactly this one execution. From here on the
	// claim is never released: an interruption leaves it in doubt.
	consumed := false
	release := func(why string) {
		if _, rev, held := l.release(); held {
			wctx, cancel := step()
			defer cancel()
			if derr := g.cfg.Idempotency.Delete(wctx, lkey, rev); derr != nil {
				g.cfg.Logger.ErrorContext(ctx, why, "key", lkey, "err", derr)
			}
		}
	}
	if input.Approval.Status == approval.StatusApproved {
		wctx, cancel := step()
		err := g.cfg.Approvals.Consume(wctx, t, approval.Consumption{IntentID: in.ID, Revision: input.Approval.Revision, Actor: p.ID, RequestID: meta.RequestID, Now: input.Time})
		cancel()
		switch {
		case errors.Is(err, approval.ErrConsumed):
			release("release claim after approval conflict")
			return Outcome{Decision: d}, contract.Wrap(contract.CodeConflict, "the approval changed after the decision; execute again", err)
		case errors.Is(err, approval.ErrNotConsumed):
			release("release claim after a failed consumption")
			return Outcome{}, writeErr("use the approval", notRun, err)
		case err != nil:
			// The approval may be used (or is, unrecorded): fail closed.
			// The claim stays and reads in doubt once its lease lapses.
			l.abandon()
			return Outcome{}, writeErr("record the use of the approval", "the action did not run, but its approval may be used and the execution will read in doubt; resolve it, then propose again", err)
		}
		consumed = true
	}

	start := contract.ExecutionResult{
		SchemaVersion: contract.SchemaVersion, Tenant: t.String(), IntentID: in.ID,
		IdempotencyKey: in.IdempotencyKey, StartedAt: input.Time,
	}
	wctx, cancel := step()
	_, err = g.cfg.Audit.Append(wctx, t, audit.Entry{
		Kind: audit.KindExecutionStarted, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: input.Time, Payload: map[string]any{"intent_id": in.ID, "idempotency_key": in.IdempotencyKey, "decision_hash": decRec.PayloadHash},
	})
	cancel()
	if err != nil {
		// Nothing ran. Without a consumed approval the claim is released so
		// a retry can proceed; with one, it stays and reads in doubt once
		// its lease lapses.
		if consumed {
			l.abandon()
			return Outcome{}, contract.Wrap(contract.CodeStoreUnavailable, "the durable store is unavailable; the action did not run, but its approval was used and the execution will read in doubt", fmt.Errorf("audit execution.started: %w", err))
		}
		release("release claim after failed audit")
		return Outcome{}, writeErr("record the execution's start", notRun, err)
	}

	res, returned := g.run(detached, in, t, decRec.PayloadHash, start)
	if !returned {
		// The executor overran its deadline and did not stop: the effect
		// may still happen. Stop renewing; the execution reads in doubt on
		// every node once the lease lapses, and is never re-run.
		l.abandon()
		g.cfg.Logger.ErrorContext(ctx, "executor overran its deadline; the execution will read in doubt", "key", lkey, "deadline", g.cfg.ExecTimeout)
		return Outcome{Decision: d}, contract.Errorf(contract.CodeInDoubt,
			"the executor did not return within %s; the action may have taken effect; the execution is in doubt and will not be re-run (an operator resolves it)", g.cfg.ExecTimeout)
	}
	c, rev, held := l.release()
	if !held {
		return g.lateOutcome(detached, t, lkey, res, p.ID, meta)
	}
	out, err := g.record(detached, t, s, lkey, c, rev, res, p.ID, meta)
	if err != nil {
		return Outcome{}, err
	}
	g.cfg.Logger.InfoContext(ctx, "executed", "tenant", t.String(), "intent", in.ID, "action", in.Action,
		"status", res.Status, "request_id", meta.RequestID)
	return out, nil
}

// record makes an execution's outcome durable after the effect: first its
// audit record, then the claim's final state (finish). An audit append that
// fails is marked on the claim (Unaudited), noted for the sweep, and
// repaired (sweep.go); a claim that cannot be written stays executing and
// reads in doubt when its lease lapses. No answer from here says nothing changed.
func (g *Gate) record(ctx context.Context, t tenant.ID, s stored, lkey string, c claim, rev uint64, res contract.ExecutionResult, actor string, meta Meta) (Outcome, error) {
	auditErr := g.auditOutcome(ctx, t, res, actor, meta.RequestID)
	c.State, c.Result, c.LeaseUntil, c.Lease, c.Unaudited = res.Status, &res, time.Time{}, 0, auditErr != nil
	if c.Unaudited {
		c.Actor = actor
	}
	wctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := g.finish(wctx, t, s, lkey, c, rev); err != nil {
		g.cfg.Logger.ErrorContext(ctx, "record execution result", "key", lkey, "status", res.Status, "audited", auditErr == nil, "err", err)
		return Outcome{}, contract.Wrap(contract.CodeStoreUnavailable,
			fmt.Sprintf("the action ran (%s) but its outcome could not be recorded; the execution is in doubt and will not be re-run (an operator resolves it)", res.Status), err)
	}
	if auditErr != nil {
		g.cfg.Logger.ErrorContext(ctx, "audit execution result; retrying in the background, and the next execute of this intent writes it", "key", lkey, "err", auditErr)
		g.noteUnaudited(ctx, t, res.IdempotencyKey, res.IntentID)
		go g.repairLater(ctx, t, s.Intent, *c.Decision, actor, meta)
		return Outcome{Decision: *c.Decision, Result: res}, contract.Wrap(contract.CodeStoreUnavailable,
			fmt.Sprintf("the action ran (%s) and its result is stored, but its audit record could not be written yet; this node retries, and the next execute of this intent writes it", res.Status), auditErr)
	}
	return Outcome{Decision: *c.Decision, Result: res}, nil
}

// repairLater retries, with backoff for a bounded time, the outcome record
// an execution could not write (a stream leader lost for a moment), so the
// record does not wait for the proposer to execute again. repair's
// compare-and-set keeps it to one record however many try.
func (g *Gate) repairLater(ctx context.Context, t tenant.ID, in contract.ActionIntent, d contract.Decision, actor string, meta Meta) {
	wait := time.Second
	for deadline := time.Now().Add(repairWindow); time.Now().Before(deadline); wait = min(2*wait, 30*time.Second) {
		time.Sleep(wait)
		c, rev, err := g.claimOf(ctx, t, in.IdempotencyKey)
		switch {
		case err != nil:
			continue // the store is still away
		case !c.Unaudited || c.Result == nil || c.IntentID != in.ID:
			return // repaired (or changed) meanwhile
		}
		if _, err := g.repair(ctx, t, in, c, rev, d, actor, meta); err == nil {
			return
		}
	}
	g.cfg.Logger.ErrorContext(ctx, "the outcome record is still missing; the next execute of the intent writes it", "tenant", t.String(), "intent", in.ID)
}

// repairWindow bounds repairLater.
const repairWindow = 5 * time.Minute

// KindOutcomeAfterResolve records the real outcome of an execution that an
// operator had already resolved (its lease lapsed while it still ran).
const KindOutcomeAfterResolve = "execution.outcome_after_resolve"

// lateOutcome handles an execution whose lease was lost while it ran: an
// operator resolved it meanwhile (after the lease lapsed). The claim keeps
// the resolution; the real outcome is recorded beside it, and the answer
// names both.
func (g *Gate) lateOutcome(ctx context.Context, t tenant.ID, lkey string, res contract.ExecutionResult, actor string, meta Meta) (Outcome, error) {
	idem := res.IdempotencyKey
	cur, _, err := g.claimOf(ctx, t, idem)
	resolved := "unknown"
	if err == nil {
		resolved = cur.State
	}
	wctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	_, aerr := g.cfg.Audit.Append(wctx, t, audit.Entry{Kind: KindOutcomeAfterResolve, CorrelationID: res.IntentID, Actor: actor, RequestID: meta.RequestID,
		Time: res.FinishedAt, Payload: map[string]any{"result": res, "claim_state": resolved}})
	g.cfg.Logger.ErrorContext(ctx, "an execution ended after it was resolved", "key", lkey, "resolved", resolved, "status", res.Status, "audit_err", errString(aerr))
	msg := fmt.Sprintf("the execution ended %s after its lease lapsed and it was resolved as %s; both are recorded, the resolution stands", res.Status, resolved)
	if aerr != nil {
		msg = fmt.Sprintf("the execution ended %s after its lease lapsed and it was resolved as %s; the late outcome could not be audited", res.Status, resolved)
	}
	return Outcome{Result: res}, contract.Wrap(contract.CodeConflict, msg, errors.Join(err, aerr))
}

// auditOutcome appends an execution's execution.succeeded or
// execution.failed record.
func (g *Gate) auditOutcome(ctx context.Context, t tenant.ID, res contract.ExecutionResult, actor, requestID string) error {
	kind := audit.KindExecutionSucceeded
	if res.Status != contract.StatusSucceeded {
		kind = audit.KindExecutionFailed
	}
	wctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	_, err := g.cfg.Audit.Append(wctx, t, audit.Entry{
		Kind: kind, CorrelationID: res.IntentID, Actor: actor, RequestID: requestID, Time: res.FinishedAt, Payload: res,
	})
	return err
}

// run mints the permit and calls the executor with a deadline
// (Config.ExecTimeout). returned is false when the executor did not come
// back within the deadline and a short grace: its outcome is unknown.
// Only here is a Permit made.
func (g *Gate) run(ctx context.Context, in contract.ActionIntent, t tenant.ID, decisionHash string, res contract.ExecutionResult) (_ contract.ExecutionResult, returned bool) {
	permit := &Permit{tenant: t, intent: in, decision: decisionHash}
	ex, ok := g.cfg.Executors.Lookup(in.Action)
	type ran struct {
		out map[string]string
		err error
	}
	var r ran
	start := time.Now()
	defer func() {
		metrics.ExecutionSeconds.WithLabelValues(in.Action, res.Status).Observe(time.Since(start).Seconds())
	}()
	if !ok {
		r.err = fmt.Errorf("no executor registered for %q", in.Action)
	} else {
		ectx, cancel := context.WithTimeout(ctx, g.cfg.ExecTimeout)
		defer cancel()
		var returned bool
		r, returned = within(g.cfg.ExecTimeout+execGrace, func() ran {
			out, err := ex.Run(ectx, permit)
			return ran{out, err}
		})
		if !returned {
			res.Status = contract.StatusInDoubt
			return res, false
		}
	}
	var errMsg string
	res.FinishedAt = g.cfg.Now().UTC()
	res.Status = contract.StatusSucceeded
	if r.err != nil {
		res.Status = contract.StatusFailed
		errMsg = r.err.Error()
	}
	// The outcome must fit its records: an output too large is cut (and
	// marked), never refused by the store after the effect.
	res.Output, res.Error = fitOutput(r.out, errMsg, RecordBudget(g.cfg.MaxRecord))
	return res, true
}

// within runs call on a goroutine of its own and waits at most d for it;
// ok is false when it did not return in time (it may still be running).
func within[T any](d time.Duration, call func() T) (v T, ok bool) {
	done := make(chan T, 1)
	go func() { done <- call() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case v = <-done:
		return v, true
	case <-t.C:
		return v, false
	}
}

// execGrace is how long past its deadline an executor may take to return.
const execGrace = 2 * time.Second

func firstReason(r []string) string {
	if len(r) == 0 {
		return ""
	}
	return r[0]
}

// repeat answers an execute whose idempotency key is already claimed.
func (g *Gate) repeat(ctx context.Context, t tenant.ID, p *auth.Principal, in contract.ActionIntent, d contract.Decision, meta Meta) (Outcome, error) {
	c, rev, err := g.claimOf(ctx, t, in.IdempotencyKey)
	if err != nil {
		return Outcome{}, writeErr("read the idempotency claim", "the decision is recorded; the action was not run again", err)
	}
	if c.IntentID != in.ID || c.IntentHash != in.Hash {
		return Outcome{}, contract.Errorf(contract.CodeConflict, "idempotency key is claimed by a different intent")
	}
	state := g.claimState(c)
	if c.Unaudited && c.Result != nil && (state == StateSucceeded || state == StateFailed) {
		return g.repair(ctx, t, in, c, rev, d, p.ID, meta)
	}
	if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: audit.KindExecutionDuplicate, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: g.cfg.Now().UTC(), Payload: map[string]any{"intent_id": in.ID, "idempotency_key": in.IdempotencyKey, "state": state},
	}); err != nil {
		return Outcome{}, writeErr("record the repeat", "the action was not run again", err)
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

// repair appends the outcome record that a finished execution could not
// write (claim.Unaudited), in place of an execution.duplicate, and then
// clears the mark; the repeat returns the first result.
//
// The mark is cleared first, with compare-and-set, so of concurrent repeats
// exactly one writes the record; if the append then fails the mark is set
// again for the next attempt.
func (g *Gate) repair(ctx context.Context, t tenant.ID, in contract.ActionIntent, c claim, rev uint64, d contract.Decision, actor string, meta Meta) (Outcome, error) {
	detached := context.WithoutCancel(ctx) // between clearing and setting back, nothing may stop halfway
	key := tenant.IdempotencyKey(t, in.IdempotencyKey)
	mark := func(unaudited bool, rev uint64) (uint64, error) {
		c.Unaudited = unaudited
		data, err := encodeValue(c)
		if err != nil {
			return 0, err
		}
		wctx, cancel := context.WithTimeout(detached, recordTimeout)
		defer cancel()
		o := kv.PutOptions{Revision: rev}
		if g.cfg.Retention != 0 { // as finish wrote it
			o.Rollup, o.TTL = true, 2*g.cfg.Retention
		}
		return g.cfg.Idempotency.Put(wctx, key, data, o)
	}
	cleared, err := mark(false, rev)
	if errors.Is(err, kv.ErrConflict) {
		// Another repeat is repairing it (or did): answer as a duplicate.
		return Outcome{Decision: d, Result: *c.Result, Duplicate: true}, nil
	}
	if err != nil {
		return Outcome{Decision: d, Result: *c.Result}, contract.Wrap(contract.CodeStoreUnavailable,
			"the action ran earlier and its result is stored, but its audit record still cannot be written; try again", err)
	}
	if err := g.auditOutcome(detached, t, *c.Result, actor, meta.RequestID); err != nil {
		if _, merr := mark(true, cleared); merr != nil {
			g.cfg.Logger.ErrorContext(ctx, "set the unaudited mark back after a failed repair", "intent", in.ID, "err", merr)
		}
		return Outcome{Decision: d, Result: *c.Result}, contract.Wrap(contract.CodeStoreUnavailable,
			"the action ran earlier and its result is stored, but its audit record still cannot be written; try again", err)
	}
	g.cfg.Logger.InfoContext(ctx, "repaired a missing execution outcome record", "tenant", t.String(), "intent", in.ID, "request_id", meta.RequestID)
	dctx, cancel := context.WithTimeout(detached, recordTimeout)
	defer cancel()
	if err := g.cfg.Idempotency.Delete(dctx, tenant.RepairKey(t, in.IdempotencyKey), 0); err != nil {
		g.cfg.Logger.WarnContext(ctx, "remove the note of a repaired outcome record; the sweep removes it", "intent", in.ID, "err", err)
	}
	return Outcome{Decision: d, Result: *c.Result, Duplicate: true}, nil
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
	data, err := encodeValue(s)
	if err == nil { // every write of an intent carries the retention's TTL
		_, err = g.cfg.Intents.Put(ctx, tenant.IntentKey(t, s.Intent.ID), data, kv.PutOptions{Revision: s.rev, TTL: g.cfg.Retention})
	}
	if errors.Is(err, kv.ErrConflict) {
		g.cfg.Logger.DebugContext(ctx, "save last decision: the intent changed meanwhile; not saved", "intent", s.Intent.ID)
		return
	}
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "save last decision", "intent", s.Intent.ID, "err", err)
	}
}
