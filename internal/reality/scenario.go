package reality

import (
	"context"
	"fmt"
	"net/http"
	"time"
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
	c := &client{ctx: ctx, ep: ep, keys: keys, http: &http.Client{Timeout: 30 * time.Second}}
	for _, n := range []string{ep.NodeA, ep.NodeB} {
		if err := c.waitReady(n); err != nil {
			return nil, State{}, err
		}
	}
	a, b := ep.NodeA, ep.NodeB
	var st State

	// Gate 5: safe default, then switches flipped on A act on B.
	r := c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.read", "target": "none.txt", "idempotency_key": "ks-default"})
	early := r.intentID()
	r = c.do(b, "POST", "/v1/tenants/acme/intents/"+early+"/execute", keys.AcmeBot, nil)
	c.check(Gate5, r.code == 403 && joined(r.reasons()) == "killswitch_global_engaged", "fresh stack blocks execution",
		"HTTP %d %v", r.code, r.reasons())
	r = c.do(a, "PUT", "/v1/killswitch", keys.AcmeOp, map[string]any{"engaged": false, "reason": "operator tries global"})
	c.check(GateAuth, r.code == 403, "an operator cannot flip the global switch", "HTTP %d", r.code)
	for _, s := range []struct{ path, key string }{{"/v1/killswitch", keys.Admin}, {"/v1/tenants/acme/killswitch", keys.AcmeOp}, {"/v1/tenants/beta/killswitch", keys.BetaOp}} {
		r = c.do(a, "PUT", s.path, s.key, map[string]any{"engaged": false, "reason": "reality: go live"})
		c.check(Gate5, r.code == 200, "disengage "+s.path, "HTTP %d", r.code)
	}
	r = c.do(a, "PUT", "/v1/killswitch", keys.Admin, map[string]any{"engaged": true, "reason": "reality: drill"})
	c.check(Gate5, r.code == 200, "engage the global switch on node A", "HTTP %d", r.code)
	r = c.do(b, "POST", "/v1/tenants/acme/intents/"+early+"/execute", keys.AcmeBot, nil)
	c.check(Gate5, r.code == 403 && joined(r.reasons()) == "killswitch_global_engaged", "node B blocks right after A's PUT returned",
		"HTTP %d %v", r.code, r.reasons())
	r = c.do(a, "PUT", "/v1/killswitch", keys.Admin, map[string]any{"engaged": false, "reason": "reality: drill over"})
	r = c.do(b, "POST", "/v1/tenants/acme/intents/"+early+"/execute", keys.AcmeBot, nil)
	c.check(Gate5, r.code == 200, "after disengaging, the same intent runs on node B", "HTTP %d", r.code)
	r = c.do(a, "PUT", "/v1/tenants/acme/killswitch", keys.AcmeOp, map[string]any{"engaged": true, "reason": "reality: tenant drill"})
	r2 := c.do(b, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.read", "target": "none.txt", "idempotency_key": "ks-tenant"})
	r3 := c.do(b, "POST", "/v1/tenants/acme/intents/"+r2.intentID()+"/execute", keys.AcmeBot, nil)
	r4 := c.do(a, "POST", "/v1/tenants/beta/intents", keys.BetaBot, map[string]any{"action": "fs.read", "target": "none.txt", "idempotency_key": "ks-beta"})
	r5 := c.do(a, "POST", "/v1/tenants/beta/intents/"+r4.intentID()+"/execute", keys.BetaBot, nil)
	c.check(Gate5, r.code == 200 && r3.code == 403 && joined(r3.reasons()) == "killswitch_tenant_engaged" && r5.code == 200,
		"acme's switch stops acme only", "engage %d, acme execute %d %v, beta execute %d", r.code, r3.code, r3.reasons(), r5.code)
	r = c.do(a, "PUT", "/v1/tenants/acme/killswitch", keys.AcmeOp, map[string]any{"engaged": false, "reason": "reality: tenant drill over"})

	// Authentication and authorization.
	r = c.do(a, "GET", "/v1/tenants/acme/audit", "", nil)
	c.check(GateAuth, r.code == 401, "no credentials: 401", "HTTP %d", r.code)
	r = c.do(a, "GET", "/v1/tenants/acme/audit", "exo_not_a_key", nil)
	c.check(GateAuth, r.code == 401, "malformed key: 401", "HTTP %d", r.code)
	r = c.do(a, "GET", "/v1/tenants/acme/approvals", keys.AcmeBot, nil)
	c.check(GateAuth, r.code == 403, "an agent cannot read the approval queue: 403", "HTTP %d", r.code)
	r = c.do(a, "POST", "/v1/keys", keys.Admin, map[string]any{"name": "temp", "role": "agent", "tenants": []string{"acme"}, "actions": []string{"A0"}})
	temp, _ := r.body["key"].(string)
	p, _ := r.body["principal"].(map[string]any)
	tempID, _ := p["id"].(string)
	okBefore := c.do(b, "GET", "/v1/tenants/acme/audit?limit=1", temp, nil).code
	rv := c.do(a, "DELETE", "/v1/keys/"+tempID, keys.Admin, nil)
	after := c.do(b, "GET", "/v1/tenants/acme/audit?limit=1", temp, nil).code
	c.check(GateAuth, r.code == 201 && okBefore == 200 && rv.code == 200 && after == 401, "a key revoked on node A is refused on node B",
		"create %d, use %d, revoke %d, use after %d", r.code, okBefore, rv.code, after)
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeRead, map[string]any{"action": "fs.write", "target": "x", "params": map[string]string{"content": "x"}, "idempotency_key": "class"})
	c.check(GateAuth, r.code == 403, "a principal without the action class cannot propose it: 403", "HTTP %d %v", r.code, r.reasons())

	// Approvals.
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.write", "target": "notes/approved.txt",
		"params": map[string]string{"content": "approved by a second principal\n"}, "idempotency_key": "appr-write"})
	w := r.intentID()
	r = c.do(b, "POST", "/v1/tenants/acme/intents/"+w+"/execute", keys.AcmeBot, nil)
	c.check(GateAppr, r.code == 403 && joined(r.reasons()) == "approval_required", "an A1 write is blocked without approval", "HTTP %d %v", r.code, r.reasons())
	q := c.do(b, "GET", "/v1/tenants/acme/approvals?status=pending", keys.AcmeOp, nil)
	items, _ := q.body["approvals"].([]any)
	c.check(GateAppr, q.code == 200 && len(items) == 1, "the pending queue holds it", "HTTP %d, %d pending", q.code, len(items))
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeOp, map[string]any{"action": "fs.write", "target": "notes/self.txt",
		"params": map[string]string{"content": "x"}, "idempotency_key": "appr-self"})
	self := c.do(a, "POST", "/v1/tenants/acme/intents/"+r.intentID()+"/approvals", keys.AcmeOp, map[string]string{"decision": "approve", "reason": "mine"})
	c.check(GateAppr, self.code == 403 && self.errCode() == "self_approval", "self-approval is refused", "HTTP %d %s", self.code, self.errCode())
	r = c.do(b, "POST", "/v1/tenants/acme/intents/"+w+"/approvals", keys.AcmeOp, map[string]string{"decision": "approve", "reason": "reviewed on node B"})
	c.check(GateAppr, r.code == 200, "an operator approves on node B", "HTTP %d", r.code)
	r = c.do(a, "POST", "/v1/tenants/acme/intents/"+w+"/execute", keys.AcmeBot, nil)
	c.check(GateAppr, r.code == 200, "the approved write executes on node A", "HTTP %d", r.code)
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.delete", "target": "notes/approved.txt", "idempotency_key": "appr-delete"})
	del := r.intentID()
	c.do(a, "POST", "/v1/tenants/acme/intents/"+del+"/approvals", keys.AcmeOp, map[string]string{"decision": "approve", "reason": "first"})
	one := c.do(b, "POST", "/v1/tenants/acme/intents/"+del+"/execute", keys.AcmeBot, nil)
	c.do(b, "POST", "/v1/tenants/acme/intents/"+del+"/approvals", keys.AcmeOp2, map[string]string{"decision": "approve", "reason": "second"})
	two := c.do(b, "POST", "/v1/tenants/acme/intents/"+del+"/execute", keys.AcmeBot, nil)
	c.check(GateAppr, one.code == 403 && joined(one.reasons()) == "approval_required" && two.code == 200,
		"an A3 delete needs two distinct operators", "after one: HTTP %d %v; after two: HTTP %d", one.code, one.reasons(), two.code)
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.write", "target": "notes/denied.txt",
		"params": map[string]string{"content": "x"}, "idempotency_key": "appr-deny"})
	dn := r.intentID()
	c.do(a, "POST", "/v1/tenants/acme/intents/"+dn+"/approvals", keys.AcmeOp, map[string]string{"decision": "deny", "reason": "no"})
	late := c.do(b, "POST", "/v1/tenants/acme/intents/"+dn+"/approvals", keys.AcmeOp2, map[string]string{"decision": "approve", "reason": "yes"})
	ex := c.do(b, "POST", "/v1/tenants/acme/intents/"+dn+"/execute", keys.AcmeBot, nil)
	c.check(GateAppr, late.code == 409 && ex.code == 403 && joined(ex.reasons()) == "approval_denied", "a denial is final",
		"approve after deny: HTTP %d; execute: HTTP %d %v", late.code, ex.code, ex.reasons())

	// Tenant isolation: acme's principals see nothing of beta.
	st.BetaExport = string(c.do(b, "GET", "/v1/tenants/beta/audit/export", keys.BetaBot, nil).raw)
	cross := 0
	for _, k := range []string{keys.AcmeBot, keys.AcmeOp} {
		for _, path := range []string{"/v1/tenants/beta/audit", "/v1/tenants/beta/audit/export", "/v1/tenants/beta/intents/" + r4.intentID(),
			"/v1/tenants/beta/approvals", "/v1/tenants/beta/killswitch"} {
			if c.do(a, "GET", path, k, nil).code == 404 {
				cross++
			}
		}
		if c.do(b, "POST", "/v1/tenants/beta/intents/"+r4.intentID()+"/execute", k, nil).code == 404 {
			cross++
		}
		if c.do(b, "PUT", "/v1/tenants/beta/killswitch", k, map[string]any{"engaged": true, "reason": "cross"}).code == 404 {
			cross++
		}
	}
	afterBeta := string(c.do(b, "GET", "/v1/tenants/beta/audit/export", keys.BetaBot, nil).raw)
	c.check(Gate6, cross == 14 && afterBeta == st.BetaExport, "every cross-tenant attempt answers 404 and beta's chain is unchanged",
		"%d/14 answered 404; beta chain unchanged: %t", cross, afterBeta == st.BetaExport)

	// Gate 1: acknowledged executions (approved writes, alternating nodes).
	for i := range durableCount {
		n, m := a, b
		if i%2 == 1 {
			n, m = b, a
		}
		r := c.do(n, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "fs.write", "target": fmt.Sprintf("durable/%02d.txt", i),
			"params": map[string]string{"content": fmt.Sprint("entry ", i)}, "idempotency_key": fmt.Sprintf("durable-%02d", i)})
		id := r.intentID()
		c.do(m, "POST", "/v1/tenants/acme/intents/"+id+"/approvals", keys.AcmeOp, map[string]string{"decision": "approve", "reason": "batch"})
		if c.do(n, "POST", "/v1/tenants/acme/intents/"+id+"/execute", keys.AcmeBot, nil).code == 200 {
			st.Acknowledged = append(st.Acknowledged, id)
		}
	}
	c.check(Gate1, len(st.Acknowledged) == durableCount, "acknowledged executions before the restarts", "%d/%d", len(st.Acknowledged), durableCount)

	// Gate 2: one side effect at the sink, executed once before the restarts.
	r = c.do(a, "POST", "/v1/tenants/acme/intents", keys.AcmeBot, map[string]any{"action": "http.post", "target": ep.Sink + "/effect",
		"params": map[string]string{"body": `{"order":42}`}, "idempotency_key": "once"})
	st.OnceIntent = r.intentID()
	c.do(b, "POST", "/v1/tenants/acme/intents/"+st.OnceIntent+"/approvals", keys.AcmeOp, map[string]string{"decision": "approve", "reason": "once"})
	first := c.do(a, "POST", "/v1/tenants/acme/intents/"+st.OnceIntent+"/execute", keys.AcmeBot, nil)
	again := c.do(b, "POST", "/v1/tenants/acme/intents/"+st.OnceIntent+"/execute", keys.AcmeBot, nil)
	c.check(Gate2, first.code == 200 && again.code == 200 && again.body["duplicate"] == true && c.sinkCount() == 1,
		"executed once; the repeat on the other node returns the first result", "HTTP %d then %d duplicate=%v; sink count %d",
		first.code, again.code, again.body["duplicate"], c.sinkCount())
	return c.checks, st, nil
}

// Phase2 runs after every service was killed with SIGKILL and restarted.
func Phase2(ctx context.Context, ep Endpoints, keys Keys, st State) ([]Check, map[string][]byte, error) {
	c := &client{ctx: ctx, ep: ep, keys: keys, http: &http.Client{Timeout: 30 * time.Second}}
	for _, n := range []string{ep.NodeA, ep.NodeB} {
		if err := c.waitReady(n); err != nil {
			return nil, nil, err
		}
	}
	a, b := ep.NodeA, ep.NodeB
	present := 0
	for _, id := range st.Acknowledged {
		if r := c.do(b, "GET", "/v1/tenants/acme/intents/"+id, keys.AcmeBot, nil); r.code == 200 && r.body["state"] == "succeeded" {
			present++
		}
	}
	c.check(Gate1, present == len(st.Acknowledged) && present > 0, "every acknowledged execution survived kill -9 of NATS and both nodes",
		"%d/%d present and succeeded", present, len(st.Acknowledged))
	for _, tn := range []struct{ t, key string }{{"acme", keys.AcmeBot}, {"beta", keys.BetaBot}} {
		r := c.do(a, "GET", "/v1/tenants/"+tn.t+"/audit/verify", tn.key, nil)
		c.check(Gate1, r.code == 200 && r.body["pass"] == true, tn.t+"'s chain verifies after the restarts", "HTTP %d pass=%v records=%v", r.code, r.body["pass"], r.body["records"])
	}
	rep := c.do(a, "POST", "/v1/tenants/acme/intents/"+st.OnceIntent+"/execute", keys.AcmeBot, nil)
	c.check(Gate2, rep.code == 200 && rep.body["duplicate"] == true && c.sinkCount() == 1, "after the restarts the repeat is a duplicate and the sink still counts 1",
		"HTTP %d duplicate=%v sink %d", rep.code, rep.body["duplicate"], c.sinkCount())
	beta := string(c.do(b, "GET", "/v1/tenants/beta/audit/export", keys.BetaBot, nil).raw)
	c.check(Gate6, beta == st.BetaExport, "beta's chain is byte-identical after the restarts", "unchanged: %t", beta == st.BetaExport)
	exports := map[string][]byte{}
	for _, tn := range []struct{ t, key string }{{"acme", keys.AcmeBot}, {"beta", keys.BetaBot}} {
		r := c.do(b, "GET", "/v1/tenants/"+tn.t+"/audit/export", tn.key, nil)
		c.check(Gate3, r.code == 200 && len(r.raw) > 0, "export "+tn.t+"'s chain", "HTTP %d, %d bytes", r.code, len(r.raw))
		exports[tn.t] = r.raw
	}
	return c.checks, exports, nil
}
