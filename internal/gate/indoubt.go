package gate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// KindExecutionResolved is the audit kind of an operator resolving an
// in-doubt execution.
const KindExecutionResolved = "execution.resolved"

// InDoubt is an execution that started and never recorded its end.
type InDoubt struct {
	IntentID       string    `json:"intent_id"`
	IdempotencyKey string    `json:"idempotency_key"`
	Node           string    `json:"node"`
	StartedAt      time.Time `json:"started_at"`
}

// ListInDoubt returns t's executions that are in doubt (started, never
// finished, not running in this process), oldest first.
func (g *Gate) ListInDoubt(ctx context.Context, t tenant.ID) ([]InDoubt, error) {
	if err := t.Check(); err != nil {
		return nil, contract.Wrap(contract.CodeInvalidTenant, "a valid tenant is required", err)
	}

	keys, err := g.cfg.Idempotency.Keys(ctx, tenant.IdempotencyKey(t, "*"))
	if err != nil {
		return nil, storeErr("list idempotency claims", err)
	}
	out := []InDoubt{}
	for _, key := range keys {
		idem := strings.TrimPrefix(key, t.String()+".")
		c, _, err := g.claimOf(ctx, t, idem)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeErr("load idempotency claim", err)
		}
		if needsRepair(c) {
			g.repairSeen(ctx, t, idem)
		}
		if g.claimState(c) == StateInDoubt {
			out = append(out, InDoubt{IntentID: c.IntentID, IdempotencyKey: idem, Node: c.Node, StartedAt: c.StartedAt})
		}
	}
	slices.SortFunc(out, func(a, b InDoubt) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

// Resolve records an operator's verdict on an in-doubt execution: it
// happened (succeeded) or it did not (failed). The claim keeps the key, so
// the intent is never re-run either way; the resolution is audited.
// Resolution is an operator's verdict on an in-doubt execution.
type Resolution struct {
	Outcome string `json:"outcome"` // succeeded or failed
	Reason  string `json:"reason"`
}

func (g *Gate) Resolve(ctx context.Context, t tenant.ID, p *auth.Principal, intentID string, r Resolution, meta Meta) (contract.ExecutionResult, error) {
	outcome, reason := r.Outcome, r.Reason
	if err := admit(t, p); err != nil {
		return contract.ExecutionResult{}, err
	}
	if outcome != contract.StatusSucceeded && outcome != contract.StatusFailed {
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeInvalid, `field "/outcome": must be "succeeded" or "failed"`)
	}
	if reason == "" {
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeInvalid, `field "/reason": required`)
	}
	s, err := g.load(ctx, t, intentID)
	if errors.Is(err, errNotFound) && g.cfg.Retention != 0 {
		// Under a retention the intent may have expired while its claim
		// stayed in doubt (no final write rewrote it): find the claim by
		// its intent.
		s, err = g.inDoubtIntent(ctx, t, intentID)
	}
	if err != nil {
		return contract.ExecutionResult{}, err
	}
	// Resolving is an operator's verdict on an effect: an operator or
	// admin of the tenant whose grants cover the action (when the intent
	// is still known).
	switch {
	case p.Role != auth.RoleOperator && p.Role != auth.RoleAdmin, !p.HasTenant(t.String()):
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeForbidden, "resolving needs the operator role for this tenant")
	case s.Intent.Action != "" && !p.MayUse(s.Intent.Action, s.Intent.Class):
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeForbidden, "your grants do not cover %s (class %s), so you may not resolve it", s.Intent.Action, s.Intent.Class)
	}
	idem := s.Intent.IdempotencyKey
	c, rev, err := g.claimOf(ctx, t, idem)
	if errors.Is(err, kv.ErrNotFound) {
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeConflict, "this intent never started executing")
	}
	if err != nil {
		return contract.ExecutionResult{}, storeErr("load idempotency claim", err)
	}
	if state := g.claimState(c); state != StateInDoubt {
		if state == StateExecuting {
			return contract.ExecutionResult{}, contract.Errorf(contract.CodeConflict, "the execution is running on node %q (its lease runs until %s); it can be resolved only once the lease lapses without an outcome",
				c.Node, c.LeaseUntil.Format(time.RFC3339))
		}
		return contract.ExecutionResult{}, contract.Errorf(contract.CodeConflict, "the execution is %s, not in doubt", state)
	}
	now := g.cfg.Now().UTC()
	res := contract.ExecutionResult{SchemaVersion: contract.SchemaVersion, Tenant: t.String(), IntentID: intentID, IdempotencyKey: idem,
		Status: outcome, StartedAt: c.StartedAt, FinishedAt: now, Error: fmt.Sprintf("in doubt; resolved by %s: %s", p.ID, reason)}
	c.State, c.Result, c.LeaseUntil, c.Lease = outcome, &res, time.Time{}, 0
	// The resolution is audited first, then applied, both detached from
	// the caller: a resolution is never in force unrecorded.
	detached := context.WithoutCancel(ctx)
	wctx, cancel := context.WithTimeout(detached, recordTimeout)
	defer cancel()
	if _, err := g.cfg.Audit.Append(wctx, t, audit.Entry{Kind: KindExecutionResolved, CorrelationID: intentID, Actor: p.ID, RequestID: meta.RequestID,
		Time: now, Payload: map[string]any{"result": res, "reason": reason, "node": c.Node}}); err != nil {
		return contract.ExecutionResult{}, writeErr("record the resolution", "the resolution was not applied; the execution is still in doubt", err)
	}
	if err := g.finish(wctx, t, s, tenant.IdempotencyKey(t, idem), c, rev); err != nil {
		return contract.ExecutionResult{}, contract.Wrap(contract.CodeConflict,
			"the resolution is audited but the claim changed meanwhile and was not updated; look at the intent again before resolving again", err)
	}
	return res, nil
}
