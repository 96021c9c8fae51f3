package reality

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/exoarmur/exoarmur/internal/action"
	apiclient "github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// Gate names as they appear in PASS_FAIL.txt.
const (
	Gate1    = "gate1_durable_audit"
	Gate2    = "gate2_idempotency_restart"
	Gate3    = "gate3_replay_equivalence"
	Gate4    = "gate4_cold_reviewer_stack"
	Gate5    = "gate5_kill_switches"
	Gate6    = "gate6_tenant_isolation"
	GateAppr = "approval_gate"
	GateAuth = "auth_boundary"
)

// Gates in report order.
var Gates = []string{Gate1, Gate2, Gate3, Gate4, Gate5, Gate6, GateAppr, GateAuth}

// durableCount is how many intents phase 1 executes for the durability check.
const durableCount = 12

// State is what phase 1 hands to phase 2 (written as JSON in the work dir).
type State struct {
	Acknowledged []string `json:"acknowledged"` // acme intents executed with 200
	OnceIntent   string   `json:"once_intent"`  // executed against the sink
	BetaExport   string   `json:"beta_export"`  // beta's export before the cross-tenant attempts
}

// Phase1 runs against a fresh stack: bootstrap switches, then every gate's
// live checks, leaving state for Phase2 to verify after the restarts.
func Phase1(ctx context.Context, ep Endpoints, keys Keys) ([]Check, State, error) {
	c, err := newClient(ctx, ep, keys)
	if err != nil {
		return nil, State{}, err
	}
	for _, n := range []*apiclient.Client{c.a, c.b} {
		if err := c.waitReady(n); err != nil {
			return nil, State{}, err
		}
	}
	a, b := c.a, c.b
	var st State

	// Gate 5: safe default, then switches flipped on A act on B.
	early, _ := c.propose(a, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSRead, Target: "none.txt", IdempotencyKey: "ks-default"})
	_, r := c.execute(b, keys.AcmeBot, "acme", early)
	c.check(Gate5, r.code == 403 && joined(r.reasons()) == "killswitch_global_engaged", "fresh stack blocks execution",
		"HTTP %d %v", r.code, r.reasons())
	r = c.setSwitch(a, keys.AcmeOp, "", false, "operator tries global")
	c.check(GateAuth, r.code == 403, "an operator cannot flip the global switch", "HTTP %d", r.code)
	for _, s := range []struct{ path, tenant, key string }{{"/v1/killswitch", "", keys.Admin}, {"/v1/tenants/acme/killswitch", "acme", keys.AcmeOp}, {"/v1/tenants/beta/killswitch", "beta", keys.BetaOp}} {
		r = c.setSwitch(a, s.key, s.tenant, false, "reality: go live")
		c.check(Gate5, r.code == 200, "disengage "+s.path, "HTTP %d", r.code)
	}
	r = c.setSwitch(a, keys.Admin, "", true, "reality: drill")
	c.check(Gate5, r.code == 200, "engage the global switch on node A", "HTTP %d", r.code)
	_, r = c.execute(b, keys.AcmeBot, "acme", early)
	c.check(Gate5, r.code == 403 && joined(r.reasons()) == "killswitch_global_engaged", "node B blocks right after A's PUT returned",
		"HTTP %d %v", r.code, r.reasons())
	c.setSwitch(a, keys.Admin, "", false, "reality: drill over")
	_, r = c.execute(b, keys.AcmeBot, "acme", early)
	c.check(Gate5, r.code == 200, "after disengaging, the same intent runs on node B", "HTTP %d", r.code)
	r = c.setSwitch(a, keys.AcmeOp, "acme", true, "reality: tenant drill")
	ksTenant, _ := c.propose(b, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSRead, Target: "none.txt", IdempotencyKey: "ks-tenant"})
	_, r3 := c.execute(b, keys.AcmeBot, "acme", ksTenant)
	betaIntent, _ := c.propose(a, keys.BetaBot, "beta", contract.IntentRequest{Action: action.FSRead, Target: "none.txt", IdempotencyKey: "ks-beta"})
	_, r5 := c.execute(a, keys.BetaBot, "beta", betaIntent)
	c.check(Gate5, r.code == 200 && r3.code == 403 && joined(r3.reasons()) == "killswitch_tenant_engaged" && r5.code == 200,
		"acme's switch stops acme only", "engage %d, acme execute %d %v, beta execute %d", r.code, r3.code, r3.reasons(), r5.code)
	c.setSwitch(a, keys.AcmeOp, "acme", false, "reality: tenant drill over")

	// Authentication and authorization.
	r = c.auditPage(a, "", "acme", 0)
	c.check(GateAuth, r.code == 401, "no credentials: 401", "HTTP %d", r.code)
	r = c.auditPage(a, "exo_not_a_key", "acme", 0)
	c.check(GateAuth, r.code == 401, "malformed key: 401", "HTTP %d", r.code)
	_, err = as(a, keys.AcmeBot).ListApprovals(ctx, "acme", "")
	r = answer(err, http.StatusOK)
	c.check(GateAuth, r.code == 403, "an agent cannot read the approval queue: 403", "HTTP %d", r.code)
	created, err := as(a, keys.Admin).CreateKey(ctx, apiclient.KeyRequest{Name: "temp", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"A0"}})
	r = answer(err, http.StatusCreated)
	okBefore := c.auditPage(b, created.Key, "acme", 1).code
	_, err = as(a, keys.Admin).RevokeKey(ctx, created.Principal.ID)
	rv := answer(err, http.StatusOK)
	after := c.auditPage(b, created.Key, "acme", 1).code
	c.check(GateAuth, r.code == 201 && okBefore == 200 && rv.code == 200 && after == 401, "a key revoked on node A is refused on node B",
		"create %d, use %d, revoke %d, use after %d", r.code, okBefore, rv.code, after)
	_, r = c.propose(a, keys.AcmeRead, "acme", contract.IntentRequest{Action: action.FSWrite, Target: "x", Params: map[string]string{"content": "x"}, IdempotencyKey: "class"})
	c.check(GateAuth, r.code == 403, "a principal without the action class cannot propose it: 403", "HTTP %d %v", r.code, r.reasons())

	// Approvals.
	w, _ := c.propose(a, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSWrite, Target: "notes/approved.txt",
		Params: map[string]string{"content": "approved by a second principal\n"}, IdempotencyKey: "appr-write"})
	_, r = c.execute(b, keys.AcmeBot, "acme", w)
	c.check(GateAppr, r.code == 403 && joined(r.reasons()) == "approval_required", "an A1 write is blocked without approval", "HTTP %d %v", r.code, r.reasons())
	items, err := as(b, keys.AcmeOp).ListApprovals(ctx, "acme", "pending")
	q := answer(err, http.StatusOK)
	c.check(GateAppr, q.code == 200 && len(items) == 1, "the pending queue holds it", "HTTP %d, %d pending", q.code, len(items))
	mine, _ := c.propose(a, keys.AcmeOp, "acme", contract.IntentRequest{Action: action.FSWrite, Target: "notes/self.txt",
		Params: map[string]string{"content": "x"}, IdempotencyKey: "appr-self"})
	self := c.approve(a, keys.AcmeOp, "acme", mine, "approve", "mine")
	c.check(GateAppr, self.code == 403 && self.errCode() == "self_approval", "self-approval is refused", "HTTP %d %s", self.code, self.errCode())
	r = c.approve(b, keys.AcmeOp, "acme", w, "approve", "reviewed on node B")
	c.check(GateAppr, r.code == 200, "an operator approves on node B", "HTTP %d", r.code)
	_, r = c.execute(a, keys.AcmeBot, "acme", w)
	c.check(GateAppr, r.code == 200, "the approved write executes on node A", "HTTP %d", r.code)
	del, _ := c.propose(a, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSDelete, Target: "notes/approved.txt", IdempotencyKey: "appr-delete"})
	c.approve(a, keys.AcmeOp, "acme", del, "approve", "first")
	_, one := c.execute(b, keys.AcmeBot, "acme", del)
	c.approve(b, keys.AcmeOp2, "acme", del, "approve", "second")
	_, two := c.execute(b, keys.AcmeBot, "acme", del)
	c.check(GateAppr, one.code == 403 && joined(one.reasons()) == "approval_required" && two.code == 200,
		"an A3 delete needs two distinct operators", "after one: HTTP %d %v; after two: HTTP %d", one.code, one.reasons(), two.code)
	dn, _ := c.propose(a, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSWrite, Target: "notes/denied.txt",
		Params: map[string]string{"content": "x"}, IdempotencyKey: "appr-deny"})
	c.approve(a, keys.AcmeOp, "acme", dn, "deny", "no")
	late := c.approve(b, keys.AcmeOp2, "acme", dn, "approve", "yes")
	_, ex := c.execute(b, keys.AcmeBot, "acme", dn)
	c.check(GateAppr, late.code == 409 && ex.code == 403 && joined(ex.reasons()) == "approval_denied", "a denial is final",
		"approve after deny: HTTP %d; execute: HTTP %d %v", late.code, ex.code, ex.reasons())

	// Tenant isolation: acme's principals see nothing of beta. An export
	// that failed never counts as unchanged.
	betaBefore, before := c.export(b, keys.BetaOp, "beta")
	st.BetaExport = string(betaBefore)
	cross := 0
	for _, k := range []string{keys.AcmeBot, keys.AcmeOp} {
		ka := as(a, k)
		reads := []func() error{
			func() error { _, err := ka.AuditPage(ctx, "beta", 0, 0); return err },
			func() error { _, err := ka.AuditExport(ctx, "beta", io.Discard); return err },
			func() error { _, err := ka.GetIntent(ctx, "beta", betaIntent); return err },
			func() error { _, err := ka.ListApprovals(ctx, "beta", ""); return err },
			func() error { _, err := ka.GetKillSwitch(ctx, "beta"); return err },
		}
		for _, read := range reads {
			if answer(read(), http.StatusOK).code == 404 {
				cross++
			}
		}
		if _, r := c.execute(b, k, "beta", betaIntent); r.code == 404 {
			cross++
		}
		if c.setSwitch(b, k, "beta", true, "cross").code == 404 {
			cross++
		}
	}
	betaAfter, afterBeta := c.export(b, keys.BetaOp, "beta")
	unchanged := before.code == 200 && afterBeta.code == 200 && string(betaAfter) == st.BetaExport
	c.check(Gate6, cross == 14 && unchanged, "every cross-tenant attempt answers 404 and beta's chain is unchanged",
		"%d/14 answered 404; beta chain unchanged: %t", cross, unchanged)

	// Gate 1: acknowledged executions (approved writes, alternating nodes).
	for i := range durableCount {
		n, m := a, b
		if i%2 == 1 {
			n, m = b, a
		}
		id, _ := c.propose(n, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.FSWrite, Target: fmt.Sprintf("durable/%02d.txt", i),
			Params: map[string]string{"content": fmt.Sprint("entry ", i)}, IdempotencyKey: fmt.Sprintf("durable-%02d", i)})
		c.approve(m, keys.AcmeOp, "acme", id, "approve", "batch")
		if _, r := c.execute(n, keys.AcmeBot, "acme", id); r.code == 200 {
			st.Acknowledged = append(st.Acknowledged, id)
		}
	}
	c.check(Gate1, len(st.Acknowledged) == durableCount, "acknowledged executions before the restarts", "%d/%d", len(st.Acknowledged), durableCount)

	// Gate 2: one side effect at the sink, executed once before the restarts.
	st.OnceIntent, _ = c.propose(a, keys.AcmeBot, "acme", contract.IntentRequest{Action: action.HTTPPost, Target: ep.Sink + "/effect",
		Params: map[string]string{"body": `{"order":42}`}, IdempotencyKey: "once"})
	c.approve(b, keys.AcmeOp, "acme", st.OnceIntent, "approve", "once")
	_, first := c.execute(a, keys.AcmeBot, "acme", st.OnceIntent)
	dup, again := c.execute(b, keys.AcmeBot, "acme", st.OnceIntent)
	c.check(Gate2, first.code == 200 && again.code == 200 && dup && c.sinkCount() == 1,
		"executed once; the repeat on the other node returns the first result", "HTTP %d then %d duplicate=%v; sink count %d",
		first.code, again.code, dup, c.sinkCount())
	return c.checks, st, nil
}

// Phase2 runs after every service was killed with SIGKILL and restarted.
func Phase2(ctx context.Context, ep Endpoints, keys Keys, st State) ([]Check, map[string][]byte, error) {
	c, err := newClient(ctx, ep, keys)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range []*apiclient.Client{c.a, c.b} {
		if err := c.waitReady(n); err != nil {
			return nil, nil, err
		}
	}
	a, b := c.a, c.b
	present := 0
	for _, id := range st.Acknowledged {
		if v, err := as(b, keys.AcmeBot).GetIntent(ctx, "acme", id); err == nil && v.State == gate.StateSucceeded {
			present++
		}
	}
	c.check(Gate1, present == len(st.Acknowledged) && present > 0, "every acknowledged execution survived kill -9 of NATS and both nodes",
		"%d/%d present and succeeded", present, len(st.Acknowledged))
	// The tenants' whole chains are their operators' to read (an agent
	// reads the records of its own intents).
	for _, tn := range []struct{ t, key string }{{"acme", keys.AcmeOp}, {"beta", keys.BetaOp}} {
		rep, err := as(a, tn.key).AuditVerify(ctx, tn.t)
		r := answer(err, http.StatusOK)
		c.check(Gate1, r.code == 200 && rep.Pass, tn.t+"'s chain verifies after the restarts", "HTTP %d pass=%v records=%v", r.code, rep.Pass, rep.Records)
	}
	dup, rep := c.execute(a, keys.AcmeBot, "acme", st.OnceIntent)
	c.check(Gate2, rep.code == 200 && dup && c.sinkCount() == 1, "after the restarts the repeat is a duplicate and the sink still counts 1",
		"HTTP %d duplicate=%v sink %d", rep.code, dup, c.sinkCount())
	beta, r := c.export(b, keys.BetaOp, "beta")
	unchanged := r.code == 200 && st.BetaExport != "" && string(beta) == st.BetaExport
	c.check(Gate6, unchanged, "beta's chain is byte-identical after the restarts", "unchanged: %t", unchanged)
	exports := map[string][]byte{}
	for _, tn := range []struct{ t, key string }{{"acme", keys.AcmeOp}, {"beta", keys.BetaOp}} {
		raw, r := c.export(b, tn.key, tn.t)
		c.check(Gate3, r.code == 200 && len(raw) > 0, "export "+tn.t+"'s chain", "HTTP %d, %d bytes", r.code, len(raw))
		exports[tn.t] = raw
	}
	return c.checks, exports, nil
}
