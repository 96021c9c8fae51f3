package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// WorkItem is a work-queue message: execute this approved intent.
type WorkItem struct {
	Tenant   string `json:"tenant"`
	IntentID string `json:"intent_id"`
}

// DecideApproval records an operator's approve or deny of an intent. When
// the approval becomes complete and the intent asked for it, the intent is
// queued for the background worker, which executes it through Execute like
// every other path.
func (g *Gate) DecideApproval(ctx context.Context, t tenant.ID, p *auth.Principal, intentID string, d contract.ApprovalDecision, meta Meta) (approval.Record, error) {
	if err := admit(t, p); err != nil {
		return approval.Record{}, err
	}
	s, err := g.load(ctx, t, intentID)
	if err != nil {
		return approval.Record{}, err
	}
	rec, err := g.cfg.Approvals.Decide(ctx, t, approval.Ballot{Intent: s.Intent, Principal: p, Decision: d.Decision, Reason: d.Reason, RequestID: meta.RequestID, Now: g.cfg.Now().UTC()})
	var unaudited error
	if errors.Is(err, approval.ErrUnaudited) {
		// The vote stands: it is queued like any other, then answered.
		unaudited, err = err, nil
	}
	switch {
	case errors.Is(err, approval.ErrSelfApproval):
		return rec, contract.Wrap(contract.CodeSelfApproval, err.Error(), err)
	case errors.Is(err, approval.ErrNotOperator), errors.Is(err, approval.ErrNotEntitled):
		return rec, contract.Wrap(contract.CodeForbidden, err.Error(), err)
	case errors.Is(err, approval.ErrNotFound):
		return rec, contract.Wrap(contract.CodeNotFound, "this intent has no approval request", err)
	case errors.Is(err, approval.ErrBadDecision), errors.Is(err, approval.ErrReasonRequired):
		return rec, contract.Wrap(contract.CodeInvalid, err.Error(), err)
	case errors.Is(err, approval.ErrFinal), errors.Is(err, approval.ErrConsumed), errors.Is(err, approval.ErrExpired),
		errors.Is(err, approval.ErrAlreadyVoted), errors.Is(err, approval.ErrNotRequired):
		return rec, contract.Wrap(contract.CodeConflict, err.Error(), err)
	case err != nil:
		return rec, writeErr("record the vote", "it may or may not be recorded: look at the approval queue before voting again (a recorded vote answers 409)", err)
	}
	if rec.Status != approval.StatusPending {
		g.quotaAdd(t, counts{approvals: -1}) // this vote decided it
	}
	g.cfg.Logger.InfoContext(ctx, "approval decision", "tenant", t.String(), "intent", intentID, "decision", d.Decision,
		"principal", p.ID, "status", rec.Status, "request_id", meta.RequestID)
	if rec.Status == approval.StatusApproved && s.Intent.ExecuteWhenApproved && g.cfg.Work != nil {
		data, _ := json.Marshal(WorkItem{Tenant: t.String(), IntentID: intentID}) // plain struct
		// The intent's ID is the message ID: a repeated approval queues it once.
		if err := g.cfg.Work.Enqueue(ctx, tenant.WorkSubject(t), data, intentID); err != nil {
			// The approval stands; the intent can still be executed by hand.
			g.cfg.Logger.ErrorContext(ctx, "queue approved intent", "intent", intentID, "err", err)
			return rec, writeErr("queue the approved intent for the background worker", fmt.Sprintf("the approval is recorded; execute %s by hand (POST .../intents/%s/execute)", intentID, intentID), errors.Join(err, unaudited))
		}
	}
	if unaudited != nil {
		return rec, contract.Wrap(contract.CodeStoreUnavailable, "the vote is recorded, but its audit record could not be written; it shows in the approval queue and in the recorded input of every decision that counts it", unaudited)
	}
	return rec, nil
}

// CodeSelfApproval is contract.CodeSelfApproval (kept for callers).
const CodeSelfApproval = contract.CodeSelfApproval
