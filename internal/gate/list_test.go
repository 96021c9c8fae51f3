package gate_test

import (
	"context"
	"testing"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestListIntents: a tenant's intents, oldest first, with their states,
// filtered by state, action, proposer and time, a page at a time; another
// tenant's intents never appear; a bad query names the parameter.
func TestListIntents(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	bot2 := &auth.Principal{ID: "key_bot2", Name: "bot2", Role: auth.RoleAgent, Tenants: []string{"acme", "beta"}, Actions: []string{"*"}}
	var ids []string
	for i, c := range []struct {
		p      *auth.Principal
		action string
	}{{agent, "fs.read"}, {agent, "fs.write"}, {bot2, "fs.read"}, {agent, "fs.read"}, {bot2, "fs.write"}} {
		req := contract.IntentRequest{Action: c.action, Target: "l.txt", Params: map[string]string{"content": "x"}, IdempotencyKey: "list-" + string(rune('a'+i))}
		v, _, err := n.gate.Propose(ctx, acme, c.p, req, gate.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.Intent.ID)
	}
	if _, err := n.gate.Execute(ctx, acme, agent, ids[0], gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	beta := tenant.MustParse("beta")
	if _, _, err := n.gate.Propose(ctx, beta, bot2, contract.IntentRequest{Action: "fs.read", Target: "b.txt", IdempotencyKey: "beta-1"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	all, err := n.gate.ListIntents(ctx, acme, gate.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	got := func(p gate.ListPage) []string {
		var out []string
		for _, v := range p.Intents {
			out = append(out, v.Intent.ID)
		}
		return out
	}
	if g := got(all); len(g) != 5 || g[0] != ids[0] || g[4] != ids[4] || all.Next != "" {
		t.Fatalf("all of acme: %v next %q, want the five oldest first", g, all.Next)
	}
	if all.Intents[0].State != contract.StatusSucceeded || all.Intents[1].State != gate.StateProposed {
		t.Fatalf("states %s, %s", all.Intents[0].State, all.Intents[1].State)
	}
	for _, c := range []struct {
		name string
		q    gate.ListQuery
		want []string
	}{
		{"state", gate.ListQuery{State: contract.StatusSucceeded}, ids[:1]},
		{"action", gate.ListQuery{Action: "fs.write"}, []string{ids[1], ids[4]}},
		{"proposer", gate.ListQuery{Proposer: bot2.ID}, []string{ids[2], ids[4]}},
		{"since", gate.ListQuery{Since: all.Intents[3].Intent.CreatedAt}, ids[3:]},
		{"until", gate.ListQuery{Until: all.Intents[1].Intent.CreatedAt}, ids[:1]},
		{"action and proposer", gate.ListQuery{Action: "fs.read", Proposer: agent.ID}, []string{ids[0], ids[3]}},
	} {
		p, err := n.gate.ListIntents(ctx, acme, c.q)
		if g := got(p); err != nil || len(g) != len(c.want) || (len(g) > 0 && (g[0] != c.want[0] || g[len(g)-1] != c.want[len(c.want)-1])) {
			t.Errorf("%s: %v %v, want %v", c.name, g, err, c.want)
		}
	}
	// Pages of two.
	var paged []string
	q := gate.ListQuery{Limit: 2}
	for pages := 0; ; pages++ {
		p, err := n.gate.ListIntents(ctx, acme, q)
		if err != nil || pages > 3 {
			t.Fatalf("page %d: %v", pages, err)
		}
		paged = append(paged, got(p)...)
		if p.Next == "" {
			break
		}
		q.After = p.Next
	}
	if len(paged) != 5 || paged[2] != ids[2] {
		t.Fatalf("paged: %v, want %v", paged, ids)
	}
	for _, bad := range []gate.ListQuery{{State: "running"}, {Limit: 501}, {After: "not-a-cursor"}, {Since: all.Intents[2].Intent.CreatedAt, Until: all.Intents[1].Intent.CreatedAt}} {
		if _, err := n.gate.ListIntents(ctx, acme, bad); contract.ErrorCode(err) != contract.CodeInvalid {
			t.Errorf("query %+v: %v, want invalid", bad, err)
		}
	}
}
