package gate_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/executor"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// declared is a registry of the built-ins and tickets.create, a declared
// A1 http action whose URL is the allowlisted host with the target as its
// path, or another host when params.mirror is "yes" (the policy must see
// the rendered URL, not the target).
func declared(tb testing.TB) *action.Registry {
	tb.Helper()
	r, err := action.ParseRegistry("actions.yaml", []byte(`actions:
  tickets.create:
    class: A1
    description: Create a ticket
    params:
      type: object
      required: [title]
      additionalProperties: false
      properties:
        title: {type: string, maxLength: 20}
        host: {type: string, enum: ["127.0.0.1:1", "127.0.0.1:2"]}
    http:
      method: POST
      url: "http://{{.params.host}}/t/{{path .target}}"
      body: '{{json .params.title}}'
`), action.ParseOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// TestProposeDeclaredAction: a declared action's params are checked
// against its schema at propose (invalid_request naming the field,
// nothing written); the policy decides on the rendered URL.
func TestProposeDeclaredAction(t *testing.T) {
	actions := declared(t)
	execs, err := executor.New(executor.Config{Actions: actions, SandboxDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	n := openNodeWith(t, t.TempDir(), execs, actions)
	ctx := context.Background()
	propose := func(key string, params map[string]string) (gate.View, error) {
		v, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "tickets.create", Target: "ops", Params: params, IdempotencyKey: key}, gate.Meta{})
		return v, err
	}
	for _, c := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"host": "127.0.0.1:1"}, `field "/params": missing property 'title'`},
		{map[string]string{"title": strings.Repeat("x", 21), "host": "127.0.0.1:1"}, `field "/params/title": maxLength`},
		{map[string]string{"title": "t", "host": "127.0.0.1:1", "extra": "x"}, `additional properties 'extra' not allowed`},
		{map[string]string{"title": "t"}, `url: template: url:1:16: executing "url" at <.params.host>: map has no entry for key "host"`},
	} {
		_, err := propose("bad", c.params)
		if contract.ErrorCode(err) != contract.CodeInvalid || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Propose(%v) = %v, want invalid_request with %q", c.params, err, c.want)
		}
	}
	if head, _, err := n.log.Head(ctx, acme); err != nil || head != 0 {
		t.Fatalf("refused proposals wrote the audit: head %d, %v", head, err)
	}

	// A principal not granted the action learns nothing of its schema: it
	// is refused as any ungranted proposal is, and audited.
	reader := &auth.Principal{ID: "key_reader", Name: "reader", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}}
	if _, _, err := n.gate.Propose(ctx, acme, reader, contract.IntentRequest{Action: "tickets.create", Target: "ops", Params: map[string]string{"extra": "x"}, IdempotencyKey: "ungranted"}, gate.Meta{}); contract.ErrorCode(err) != contract.CodeForbidden || strings.Contains(err.Error(), "params") {
		t.Fatalf("an ungranted principal's proposal with bad params = %v, want forbidden saying nothing of the params", err)
	}
	if head, _, err := n.log.Head(ctx, acme); err != nil || head != 1 {
		t.Fatalf("the ungranted proposal was not audited: head %d, %v", head, err)
	}

	v, err := propose("ok", map[string]string{"title": "t", "host": "127.0.0.1:1"})
	// (A1: the preview still waits for an approval; the policy allows.)
	if err != nil || !reflect.DeepEqual(v.Preview.Reasons, []string{gate.ReasonApprovalRequired}) || v.Intent.Class != contract.A1 {
		t.Fatalf("Propose to the allowlisted host = %+v, %v", v.Preview, err)
	}
	// The same target, rendered to a host off the allowlist: the policy
	// sees the rendered URL and denies.
	v, err = propose("other", map[string]string{"title": "t", "host": "127.0.0.1:2"})
	if err != nil || v.Preview.Verdict != contract.Deny || !reflect.DeepEqual(v.Preview.Reasons, []string{gate.ReasonPolicyDenied, gate.ReasonApprovalRequired}) {
		t.Fatalf("Propose to another host = %+v, %v", v.Preview, err)
	}
}

// TestDecideDeclaredRenderFailure: a recorded intent whose request no
// longer renders (a registry whose schema refuses it) is denied, the
// detail saying why; a registry without the type fails loudly too.
func TestDecideDeclaredRenderFailure(t *testing.T) {
	actions := declared(t)
	in := contract.ActionIntent{SchemaVersion: contract.SchemaVersion, ID: "in_1", Tenant: "acme", Action: "tickets.create", Class: contract.A1,
		Target: "ops", Params: map[string]string{"title": strings.Repeat("x", 30), "host": "127.0.0.1:1"}, IdempotencyKey: "k", Proposer: agent.ID}
	input := gate.Input{Tenant: "acme", Intent: in, Principal: *agent, PolicyHash: policy.Default().Hash(), Allowlist: []string{"127.0.0.1:1"}}
	d := gate.Decide(input, policy.Default(), actions)
	var detail string
	for _, c := range d.Checks {
		if c.Name == gate.CheckPolicy {
			detail = c.Detail
			if c.Reason != gate.ReasonPolicyDenied {
				t.Fatalf("policy check %+v", c)
			}
		}
	}
	if d.Verdict != contract.Deny || !strings.HasPrefix(detail, "render: ") || !strings.Contains(detail, "maxLength") {
		t.Fatalf("Decide = %s, policy detail %q", d.Verdict, detail)
	}
	if d := gate.Decide(input, policy.Default(), action.Builtin()); !strings.Contains(strings.Join(d.Reasons, ","), gate.ReasonActionUnknown) {
		t.Fatalf("Decide on the built-ins = %v", d.Reasons)
	}
}
