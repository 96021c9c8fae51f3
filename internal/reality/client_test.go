package reality

import (
	"context"
	"net/http"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// TestReplies: the scenario's helpers read the typed client's answers as
// the checks expect: the success status of each call, a refusal's status,
// code and reasons, and -1 when no server answers.
func TestReplies(t *testing.T) {
	srv := clienttest.Start(t)
	ctx := context.Background()
	c, err := newClient(ctx, Endpoints{NodeA: srv.URL, NodeB: srv.URL, Sink: "http://127.0.0.1:1"}, Keys{})
	if err != nil {
		t.Fatal(err)
	}
	agent, op, op2 := srv.Keys[clienttest.Agent], srv.Keys[clienttest.Operator], srv.Keys[clienttest.Operator2]
	req := contract.IntentRequest{Action: "fs.write", Target: "notes/a.txt", Params: map[string]string{"content": "x"}, IdempotencyKey: "k1"}
	id, r := c.propose(c.a, agent, "acme", req)
	if r.code != http.StatusCreated || id == "" {
		t.Fatalf("propose: HTTP %d id %q, want 201 and an ID", r.code, id)
	}
	if again, r := c.propose(c.b, agent, "acme", req); r.code != http.StatusOK || again != id {
		t.Fatalf("propose again: HTTP %d id %q, want 200 and %q", r.code, again, id)
	}
	if _, r := c.execute(c.a, agent, "acme", id); r.code != 403 || joined(r.reasons()) != "approval_required" || r.errCode() != contract.CodeBlocked {
		t.Fatalf("execute without approval: HTTP %d %s %v", r.code, r.errCode(), r.reasons())
	}
	if r := c.approve(c.a, agent, "acme", id, "approve", "mine"); r.code != 403 {
		t.Fatalf("an agent's approval: HTTP %d, want 403", r.code)
	}
	if r := c.approve(c.a, op, "acme", id, "approve", "ok"); r.code != 200 {
		t.Fatalf("approve: HTTP %d %s", r.code, r.errCode())
	}
	if dup, r := c.execute(c.b, agent, "acme", id); r.code != 200 || dup {
		t.Fatalf("execute: HTTP %d duplicate=%t, want 200 and a first run", r.code, dup)
	}
	if dup, r := c.execute(c.b, agent, "acme", id); r.code != 200 || !dup {
		t.Fatalf("execute again: HTTP %d duplicate=%t, want 200 and a duplicate", r.code, dup)
	}
	if r := c.approve(c.a, op2, "acme", id, "deny", "late"); r.code != 409 {
		t.Fatalf("a vote on a consumed approval: HTTP %d %s, want 409", r.code, r.errCode())
	}
	if r := c.auditPage(c.a, "", "acme", 1); r.code != 401 {
		t.Fatalf("no credentials: HTTP %d", r.code)
	}
	if r := c.auditPage(c.a, agent, "acme", 1); r.code != 200 {
		t.Fatalf("audit page: HTTP %d", r.code)
	}
	if raw, r := c.export(c.a, agent, "acme"); r.code != 403 || raw != nil {
		t.Fatalf("an agent's export: HTTP %d, %d bytes, want 403 (the tenant's whole audit is for operators, admins and auditors)", r.code, len(raw))
	}
	raw, r := c.export(c.a, op, "acme")
	if r.code != 200 || len(raw) == 0 {
		t.Fatalf("export: HTTP %d, %d bytes", r.code, len(raw))
	}
	if raw, r := c.export(c.a, agent, "beta"); r.code != 404 || raw != nil {
		t.Fatalf("cross-tenant export: HTTP %d, %d bytes, want 404 and nothing", r.code, len(raw))
	}
	if r := c.setSwitch(c.a, op, "", true, "not an admin"); r.code != 403 {
		t.Fatalf("an operator flips the global switch: HTTP %d", r.code)
	}
	if r := c.setSwitch(c.a, op, "acme", false, "go"); r.code != 200 {
		t.Fatalf("tenant switch: HTTP %d %s", r.code, r.errCode())
	}
	if n := c.sinkCount(); n != 0 {
		t.Fatalf("unreachable sink counts %d", n)
	}
	down, err := newClient(ctx, Endpoints{NodeA: "http://127.0.0.1:1", NodeB: "http://127.0.0.1:1"}, Keys{})
	if err != nil {
		t.Fatal(err)
	}
	if _, r := down.execute(down.a, agent, "acme", id); r.code != -1 {
		t.Fatalf("unreachable node: HTTP %d, want -1", r.code)
	}
}
