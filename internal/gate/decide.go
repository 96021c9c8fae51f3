package gate

import (
	"strconv"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Input is everything a decision depends on. The live gate gathers it from
// the stores; replay reads it back from the audit record. Decide sees nothing
// else, so the same Input always yields the same Decision.
type Input struct {
	// Global and TenantSwitch are the kill switches as read from the
	// node's watched copy, with their revisions and freshness.
	Global       killswitch.Reading `json:"global_switch"`
	TenantSwitch killswitch.Reading `json:"tenant_switch"`

	// Approval is the intent's approval as read at decision time, with
	// its KV revision.
	Approval approval.Reading `json:"approval"`

	Tenant     string                `json:"tenant"`
	Intent     contract.ActionIntent `json:"intent"`
	Principal  auth.Principal        `json:"principal"`
	PolicyHash string                `json:"policy_hash"`
	Allowlist  []string              `json:"allowlist"`
	Time       time.Time             `json:"time"`
	// AuditChain, when not empty, says why this node found the tenant's
	// audit chain no longer extends its last checkpoint (rewritten or
	// recreated in the store: internal/checkpoint): the gate stops as if
	// the tenant's switch were engaged.
	AuditChain string `json:"audit_chain,omitempty"`
	// PolicyUnavailable, when not empty, says why the bundle in force for
	// the tenant (PolicyHash: an activation this node cannot apply) could
	// not be used here: the decision denies (policy_unavailable).
	PolicyUnavailable string `json:"policy_unavailable,omitempty"`
}

// Check names, in evaluation order. Later issues add checks to this list.
const (
	CheckKillSwitch = "killswitch"
	CheckTenant     = "tenant"
	CheckPrincipal  = "principal"
	CheckGrant      = "grant"
	CheckPolicy     = "policy"
	CheckApproval   = "approval"
)

// Reason codes a blocked decision can carry.
const (
	ReasonGlobalEngaged     = "killswitch_global_engaged"
	ReasonTenantEngaged     = "killswitch_tenant_engaged"
	ReasonSwitchStale       = "killswitch_state_stale"
	ReasonAuditDiverged     = "audit_chain_diverged"
	ReasonTenantInvalid     = "tenant_invalid"
	ReasonTenantMismatch    = "tenant_mismatch"
	ReasonUnauthenticated   = "unauthenticated"
	ReasonKeyExpired        = "key_expired"
	ReasonTenantNotGranted  = "tenant_not_granted"
	ReasonActionUnknown     = "action_unknown"
	ReasonActionNotGranted  = "action_not_granted"
	ReasonPolicyUnknown     = "policy_unknown"
	ReasonPolicyUnavailable = "policy_unavailable"
	ReasonPolicyDenied      = "policy_denied"
	ReasonPolicyEvalFailure = "policy_error"
	ReasonApprovalRequired  = "approval_required"
	ReasonApprovalExpired   = "approval_expired"
	ReasonApprovalDenied    = "approval_denied"
	ReasonApprovalInvalid   = "approval_invalid"
	// ReasonNotProposer: an execute by a principal other than the intent's
	// proposer (refused before the decision, audited as access.denied).
	ReasonNotProposer = "not_proposer"
	// ReasonIntentVersion: an intent whose schema_version is not the one
	// its action's name needs (a v2 intent of a V1 name, a v1 intent of a
	// wider one).
	ReasonIntentVersion = "intent_version_invalid"
)

// Decide is the pure decision function: kill switches, tenant, principal,
// grant, policy, approval, in that order. Every check runs and is
// reported, and any failure denies; the reasons list the failing checks'
// codes in check order. The policy bundle is a value passed in: it must be
// the one the input names (PolicyHash), else the policy check fails. So is
// the action registry: an action type it does not register fails the grant
// and policy checks; its registration gives the class and the effect the
// policy sees, and, for a declared http action, the target the policy
// decides on: its rendered URL (a request that does not render denies,
// the detail saying why).
func Decide(in Input, bundle *policy.Bundle, actions *action.Registry) contract.Decision {
	d := contract.Decision{
		SchemaVersion: contract.SchemaVersion,
		Tenant:        in.Tenant,
		IntentID:      in.Intent.ID,
		IntentHash:    in.Intent.Hash,
		PolicyHash:    in.PolicyHash,
		DecidedAt:     in.Time,
		Checks:        make([]contract.CheckResult, 0, 6),
	}
	add := func(name, reason, detail string) {
		c := contract.CheckResult{Name: name, Outcome: contract.Pass, Detail: detail}
		if reason != "" {
			c.Outcome = contract.Fail
			c.Reason = reason
			d.Reasons = append(d.Reasons, reason)
		}
		d.Checks = append(d.Checks, c)
	}

	// 0. Kill switches: global, then tenant. Never set, engaged, unreadable
	// or stale all block; the detail names the switch, revision and actor.
	g, ts := &in.Global, &in.TenantSwitch
	switch {
	case !g.Fresh || !ts.Fresh || ts.Scope != in.Tenant:
		add(CheckKillSwitch, ReasonSwitchStale, switchDetail(g)+"; "+switchDetail(ts))
	case g.Engaged:
		add(CheckKillSwitch, ReasonGlobalEngaged, switchDetail(g))
	case ts.Engaged:
		add(CheckKillSwitch, ReasonTenantEngaged, switchDetail(ts))
	case in.AuditChain != "":
		// Nothing runs on a chain that was tampered with: the decision
		// could not be recorded where it would be trusted.
		add(CheckKillSwitch, ReasonAuditDiverged, in.AuditChain)
	default:
		add(CheckKillSwitch, "", "")
	}

	// 1. Tenant: present, valid, and the intent belongs to it.
	switch {
	case in.Tenant == "" || !validTenant(in.Tenant):
		add(CheckTenant, ReasonTenantInvalid, "")
	case in.Intent.Tenant != in.Tenant:
		add(CheckTenant, ReasonTenantMismatch, "")
	default:
		add(CheckTenant, "", "")
	}

	// 2. Principal: authenticated and not expired.
	p := &in.Principal
	switch {
	case p.ID == "":
		add(CheckPrincipal, ReasonUnauthenticated, "")
	case p.Expired(in.Time):
		add(CheckPrincipal, ReasonKeyExpired, "")
	default:
		add(CheckPrincipal, "", "")
	}

	// 3. Grant: the principal holds this tenant and this action (class).
	// The intent's schema_version must be the one its action's name
	// needs (v1 for a V1 name, v2 for a wider one): anything else is not
	// an intent the gate stored.
	spec, known := actions.Lookup(in.Intent.Action)
	versionErr := contract.CheckIntentVersion(in.Intent.SchemaVersion, in.Intent.Action)
	switch {
	case !known || spec.Class != in.Intent.Class:
		add(CheckGrant, ReasonActionUnknown, "")
	case versionErr != nil:
		add(CheckGrant, ReasonIntentVersion, versionErr.Error())
	case !p.HasTenant(in.Tenant):
		add(CheckGrant, ReasonTenantNotGranted, "")
	case !p.MayUse(spec.Type, spec.Class):
		add(CheckGrant, ReasonActionNotGranted, "")
	default:
		add(CheckGrant, "", "")
	}

	// 4. Policy: the recorded bundle, evaluated purely.
	switch {
	case in.PolicyUnavailable != "":
		add(CheckPolicy, ReasonPolicyUnavailable, in.PolicyUnavailable)
	case bundle == nil || bundle.Hash() != in.PolicyHash:
		add(CheckPolicy, ReasonPolicyUnknown, "")
	case !known:
		add(CheckPolicy, ReasonPolicyDenied, "no action spec")
	default:
		// A declared http action is decided on its rendered URL (what the
		// executor calls); one that does not render is denied.
		target, err := spec.PolicyTarget(in.Intent.Target, in.Intent.Params)
		if err != nil {
			add(CheckPolicy, ReasonPolicyDenied, "render: "+err.Error())
			break
		}
		res := policy.Evaluate(bundle, policy.Request{
			PrincipalID: p.ID,
			Role:        p.Role,
			Action:      spec.Type,
			Class:       spec.Class,
			Effect:      spec.Effect,
			Target:      target,
			Allowlist:   in.Allowlist,
			Params:      in.Intent.Params, // seen by an effect WithParams only (declared actions)
			Time:        in.Time,
		})
		switch {
		case len(res.Errors) > 0:
			add(CheckPolicy, ReasonPolicyEvalFailure, joinReasons(res.Errors))
		case !res.Allowed:
			add(CheckPolicy, ReasonPolicyDenied, joinReasons(res.Reasons))
		default:
			add(CheckPolicy, "", joinReasons(res.Reasons))
		}
	}

	// 5. Approval: side-effect classes need an approval of exactly this
	// intent, by distinct owners other than the proposer's, unexpired.
	add(CheckApproval, approvalReason(in), "")

	d.Verdict = contract.Allow
	if len(d.Reasons) > 0 {
		d.Verdict = contract.Deny
	} else {
		d.Reasons = []string{}
	}
	return d
}

func approvalReason(in Input) string {
	need := in.Approval.Required
	if need == 0 {
		need = approval.Floor(in.Intent.Class) // recorded before the number was
	}
	if need == 0 {
		return ""
	}
	a := &in.Approval
	switch {
	case a.Status == approval.StatusDenied:
		return ReasonApprovalDenied
	case a.Status == approval.StatusNone || a.Status == "":
		return ReasonApprovalRequired
	case a.IntentHash != in.Intent.Hash || a.Proposer != in.Intent.Proposer:
		return ReasonApprovalInvalid
	case a.Status == approval.StatusExecuted:
		return "" // consumed by this intent's execution: a repeat returns its first result
	case !in.Time.Before(a.ExpiresAt) || a.Status == approval.StatusExpired:
		return ReasonApprovalExpired
	}
	if approval.Distinct(*a) < need {
		return ReasonApprovalRequired
	}
	return ""
}

func switchDetail(r *killswitch.Reading) string {
	state := "engaged"
	if !r.Engaged {
		state = "disengaged"
	}
	if r.Revision == 0 {
		return r.Scope + " engaged (never set: safe default)"
	}
	d := r.Scope + " " + state + " rev " + strconv.FormatUint(r.Revision, 10) + " by " + r.Actor + ": " + r.Reason
	if !r.Fresh {
		d += " (stale local copy)"
	}
	return d
}

func validTenant(s string) bool {
	_, err := tenant.Parse(s)
	return err == nil
}

func joinReasons(r []string) string {
	switch len(r) {
	case 0:
		return ""
	case 1:
		return r[0]
	}
	n := len(r) - 1
	for _, s := range r {
		n += len(s)
	}
	b := make([]byte, 0, n)
	for i, s := range r {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, s...)
	}
	return string(b)
}
