package gate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// DecideUnder decides in as if it had been recorded under candidate: the
// same pure Decide on the same input, with the candidate's hash as the
// input's policy hash. Shadow evaluation (a candidate beside the active
// bundle) and counterfactual replay (a candidate over recorded
// decisions) both decide with it, so they agree with what the gate would
// decide once the candidate is active.
func DecideUnder(in Input, candidate *policy.Bundle, actions *action.Registry) contract.Decision {
	if candidate != nil {
		// The candidate is what the input is decided under, whatever
		// kept the recorded bundle from being used.
		in.PolicyHash, in.PolicyUnavailable = candidate.Hash(), ""
	}
	return Decide(in, candidate, actions)
}

// Differs reports whether two decisions of one input decide differently:
// another verdict or other reasons. What the permitting policies were
// (the policy check's detail) is not a difference of outcome.
func Differs(a, b contract.Decision) bool {
	return a.Verdict != b.Verdict || !slices.Equal(a.Reasons, b.Reasons)
}

// PolicyDetail is the detail of a decision's policy check: the ids of
// the policies that decided it ("" when the check did not run).
func PolicyDetail(d contract.Decision) string {
	for _, c := range d.Checks {
		if c.Name == CheckPolicy {
			return c.Detail
		}
	}
	return ""
}

// Side is a decision as one bundle makes it: what shadow evaluation and
// counterfactual replay show of each side of a difference.
type Side struct {
	PolicyHash string   `json:"policy_hash"`
	Verdict    string   `json:"verdict"`
	Reasons    []string `json:"reasons"`
	Policies   string   `json:"policies"` // the policy check's detail: the ids that decided it
}

// SideOf is d's side.
func SideOf(d contract.Decision) Side {
	return Side{PolicyHash: d.PolicyHash, Verdict: d.Verdict, Reasons: slices.Clone(d.Reasons), Policies: PolicyDetail(d)}
}

// KindShadowDiffers records a decision the shadow bundle decides
// otherwise than the active one (shadow mode: never enforced).
const KindShadowDiffers = "policy.shadow_differs"

// ShadowDifference is one decision the shadow bundle decides otherwise:
// the payload of a policy.shadow_differs record.
type ShadowDifference struct {
	IntentID  string `json:"intent_id"`
	Action    string `json:"action"`
	Target    string `json:"target"`
	Decision  string `json:"decision"` // the kind of the enforced decision's record
	Active    Side   `json:"active"`
	Candidate Side   `json:"candidate"`
}

// ShadowSummary is what this node saw of the shadow bundle for a tenant
// since it started (GET /v1/tenants/{t}/policy/shadow).
type ShadowSummary struct {
	Candidate   string             `json:"candidate_policy_hash"`
	Active      string             `json:"active_policy_hash"`
	Decisions   uint64             `json:"decisions"`
	Differ      uint64             `json:"differ"`
	Recent      []ShadowDifference `json:"recent"`      // the latest differences, newest last (at most maxShadowRecent)
	Unrecorded  uint64             `json:"unrecorded"`  // differences whose audit record could not be written
	Enforcement string             `json:"enforcement"` // always "none": the candidate decides nothing
}

const maxShadowRecent = 50

// shadowState is the per-tenant summaries of a gate with a shadow bundle.
type shadowState struct {
	mu      sync.Mutex
	tenants map[string]*ShadowSummary
	writers chan struct{} // the shadow records in flight (shadowWriters)
}

// Shadow returns this node's summary of the shadow bundle for t; false
// when the gate runs no shadow bundle.
func (g *Gate) Shadow(t tenant.ID) (ShadowSummary, bool) {
	if g.cfg.Shadow == nil {
		return ShadowSummary{}, false
	}
	g.shadow.mu.Lock()
	defer g.shadow.mu.Unlock()
	_, active, _ := g.cfg.Policies.For(t)
	s := ShadowSummary{Candidate: g.cfg.Shadow.Hash(), Active: active, Enforcement: "none", Recent: []ShadowDifference{}}
	if got, ok := g.shadow.tenants[t.String()]; ok {
		s.Decisions, s.Differ, s.Unrecorded = got.Decisions, got.Differ, got.Unrecorded
		s.Recent = slices.Clone(got.Recent)
	}
	return s, true
}

// shadowed evaluates the shadow bundle (if any) on the input of an
// enforced decision d, recorded as kind, and counts, logs and records a
// difference. It never changes d: a failure to record the difference is
// logged and counted, not returned.
func (g *Gate) shadowed(ctx context.Context, t tenant.ID, in Input, d contract.Decision, kind, actor, requestID string) {
	if g.cfg.Shadow == nil {
		return
	}
	c := DecideUnder(in, g.cfg.Shadow, g.cfg.Actions)
	differs := Differs(d, c)
	var diff ShadowDifference // built only for a difference (the common case is none)
	if differs {
		diff = ShadowDifference{IntentID: in.Intent.ID, Action: in.Intent.Action, Target: in.Intent.Target, Decision: kind, Active: SideOf(d), Candidate: SideOf(c)}
	}
	g.shadow.mu.Lock()
	s, ok := g.shadow.tenants[t.String()]
	if !ok {
		s = &ShadowSummary{}
		g.shadow.tenants[t.String()] = s
	}
	s.Decisions++
	if differs {
		s.Differ++
		s.Recent = append(s.Recent, diff)
		if len(s.Recent) > maxShadowRecent {
			s.Recent = slices.Delete(s.Recent, 0, len(s.Recent)-maxShadowRecent)
		}
	}
	g.shadow.mu.Unlock()
	metrics.ShadowDecisions.WithLabelValues(boolLabel(differs)).Inc()
	if !differs {
		return
	}
	g.cfg.Logger.InfoContext(ctx, "policy shadow: the candidate bundle decides otherwise (not enforced)", "tenant", t.String(), "intent", in.Intent.ID,
		"action", in.Intent.Action, "active", d.Verdict, "active_reasons", d.Reasons, "candidate", c.Verdict, "candidate_reasons", c.Reasons, "candidate_policy_hash", g.cfg.Shadow.Hash())
	// The record is written off the enforced path: the decision's own
	// record, claim and effect never wait for it. At most shadowWriters
	// are in flight; a difference beyond them is counted unrecorded.
	unrecorded := func(err error) {
		g.shadow.mu.Lock()
		s.Unrecorded++
		g.shadow.mu.Unlock()
		g.cfg.Logger.Warn("policy shadow: the difference could not be recorded in the audit log; the enforced decision stands", "tenant", t.String(), "intent", in.Intent.ID, "err", err)
	}
	select {
	case g.shadow.writers <- struct{}{}:
	default:
		unrecorded(errors.New("too many shadow records in flight"))
		return
	}
	go func() {
		defer func() { <-g.shadow.writers }()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shadowWriteTimeout)
		defer cancel()
		if _, err := g.cfg.Audit.Append(wctx, t, audit.Entry{Kind: KindShadowDiffers, CorrelationID: "shadow:" + in.Intent.ID, Actor: actor, RequestID: requestID, Time: in.Time, Payload: diff}); err != nil {
			unrecorded(err)
		}
	}()
}

// shadowWriters bounds the shadow records in flight; shadowWriteTimeout
// bounds each.
const (
	shadowWriters      = 64
	shadowWriteTimeout = 10 * time.Second
)

func boolLabel(b bool) string {
	if b {
		return "differs"
	}
	return "same"
}
