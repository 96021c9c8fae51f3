package gate

import (
	"reflect"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/policy"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func baseInput() Input {
	in := contract.ActionIntent{
		SchemaVersion: contract.SchemaVersion, ID: "in_1", Tenant: "acme", Action: "fs.write", Class: contract.A1,
		Target: "notes/a.txt", Params: map[string]string{"content": "x"}, IdempotencyKey: "k1", Proposer: "key_1", CreatedAt: t0,
	}
	in.Hash, _ = in.ComputeHash()
	return Input{
		Approval: approval.Reading{Status: approval.StatusApproved, IntentHash: in.Hash, Proposer: in.Proposer,
			Approvers: []string{"key_op"}, ExpiresAt: t0.Add(time.Hour), Revision: 5},
		Global:       killswitch.Reading{Scope: "global", Engaged: false, Revision: 3, Actor: "key_admin", Reason: "go", Fresh: true},
		TenantSwitch: killswitch.Reading{Scope: "acme", Engaged: false, Revision: 4, Actor: "key_op", Reason: "go", Fresh: true},
		Tenant:       "acme",
		Intent:       in,
		Principal:    auth.Principal{ID: "key_1", Name: "agent", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}},
		PolicyHash:   policy.Default().Hash(),
		Allowlist:    []string{"127.0.0.1:8099"},
		Time:         t0.Add(time.Minute),
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Input)
		verdict string
		reasons []string
	}{
		{"allowed write", func(*Input) {}, contract.Allow, []string{}},
		{"global switch engaged", func(in *Input) { in.Global.Engaged = true }, contract.Deny, []string{ReasonGlobalEngaged}},
		{"tenant switch engaged", func(in *Input) { in.TenantSwitch.Engaged = true }, contract.Deny, []string{ReasonTenantEngaged}},
		{"global never set", func(in *Input) { in.Global = killswitch.Reading{Scope: "global", Engaged: true, Fresh: true} }, contract.Deny, []string{ReasonGlobalEngaged}},
		{"stale global copy", func(in *Input) { in.Global.Fresh = false }, contract.Deny, []string{ReasonSwitchStale}},
		{"the tenant's audit chain diverged from its checkpoint", func(in *Input) { in.AuditChain = "record 6 has another hash" }, contract.Deny, []string{ReasonAuditDiverged}},
		{"stale tenant copy", func(in *Input) { in.TenantSwitch.Fresh = false }, contract.Deny, []string{ReasonSwitchStale}},
		{"switch of another tenant", func(in *Input) { in.TenantSwitch.Scope = "other" }, contract.Deny, []string{ReasonSwitchStale}},
		{"missing switch readings", func(in *Input) { in.Global, in.TenantSwitch = killswitch.Reading{}, killswitch.Reading{} }, contract.Deny, []string{ReasonSwitchStale}},
		{"missing tenant", func(in *Input) { in.Tenant = "" }, contract.Deny, []string{ReasonSwitchStale, ReasonTenantInvalid, ReasonTenantNotGranted}},
		{"invalid tenant", func(in *Input) { in.Tenant = "a.b" }, contract.Deny, []string{ReasonSwitchStale, ReasonTenantInvalid, ReasonTenantNotGranted}},
		{"intent of another tenant", func(in *Input) { in.Intent.Tenant = "other" }, contract.Deny, []string{ReasonTenantMismatch}},
		{"no principal", func(in *Input) { in.Principal = auth.Principal{} }, contract.Deny, []string{ReasonUnauthenticated, ReasonTenantNotGranted}},
		{"expired key", func(in *Input) { in.Principal.ExpiresAt = t0 }, contract.Deny, []string{ReasonKeyExpired}},
		{"tenant not granted", func(in *Input) { in.Principal.Tenants = []string{"other"} }, contract.Deny, []string{ReasonTenantNotGranted}},
		{"class not granted", func(in *Input) { in.Principal.Actions = []string{contract.A0} }, contract.Deny, []string{ReasonActionNotGranted}},
		{"action granted by type", func(in *Input) { in.Principal.Actions = []string{"fs.write"} }, contract.Allow, []string{}},
		{"unknown action", func(in *Input) { in.Intent.Action = "shell.exec" }, contract.Deny, []string{ReasonActionUnknown, ReasonPolicyDenied}},
		{"class tampered", func(in *Input) { in.Intent.Class = contract.A0 }, contract.Deny, []string{ReasonActionUnknown}},
		{"v2 intent of a V1 name", func(in *Input) { in.Intent.SchemaVersion = contract.SchemaVersionV2 }, contract.Deny, []string{ReasonIntentVersion}},
		{"intent without a version", func(in *Input) { in.Intent.SchemaVersion = "" }, contract.Deny, []string{ReasonIntentVersion}},
		{"path escape", func(in *Input) { in.Intent.Target = "../x" }, contract.Deny, []string{ReasonPolicyDenied}},
		{"absolute path", func(in *Input) { in.Intent.Target = "/etc/passwd" }, contract.Deny, []string{ReasonPolicyDenied}},
		{"unknown policy", func(in *Input) { in.PolicyHash = "00" }, contract.Deny, []string{ReasonPolicyUnknown}},
		{"no approval", func(in *Input) { in.Approval = approval.Reading{Status: approval.StatusNone} }, contract.Deny, []string{ReasonApprovalRequired}},
		{"pending approval", func(in *Input) { in.Approval.Status, in.Approval.Approvers = approval.StatusPending, nil }, contract.Deny, []string{ReasonApprovalRequired}},
		{"denied", func(in *Input) { in.Approval.Status = approval.StatusDenied }, contract.Deny, []string{ReasonApprovalDenied}},
		{"expired", func(in *Input) { in.Approval.ExpiresAt = in.Time }, contract.Deny, []string{ReasonApprovalExpired}},
		{"approval of another intent version", func(in *Input) { in.Approval.IntentHash = "x" }, contract.Deny, []string{ReasonApprovalInvalid}},
		{"self approval does not count", func(in *Input) { in.Approval.Approvers = []string{in.Intent.Proposer} }, contract.Deny, []string{ReasonApprovalRequired}},
		{"consumed by this intent (a repeat)", func(in *Input) { in.Approval.Status = approval.StatusExecuted }, contract.Allow, []string{}},
		{"A3 with one approver", func(in *Input) { in.Intent.Action, in.Intent.Class = "fs.delete", contract.A3 }, contract.Deny, []string{ReasonApprovalRequired}},
		{"A3 with the same approver twice", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Approval.Approvers = "fs.delete", contract.A3, []string{"key_op", "key_op"}
		}, contract.Deny, []string{ReasonApprovalRequired}},
		{"A3 with two approvers", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Approval.Approvers = "fs.delete", contract.A3, []string{"key_op", "key_op2"}
		}, contract.Allow, []string{}},
		{"A0 needs none", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Approval = "fs.read", contract.A0, approval.Reading{Status: approval.StatusNone}
		}, contract.Allow, []string{}},
		{"allowlisted host", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Intent.Target = "http.get", contract.A0, "http://127.0.0.1:8099/x"
		}, contract.Allow, []string{}},
		{"host not allowlisted", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Intent.Target = "http.get", contract.A0, "http://evil.example/x"
		}, contract.Deny, []string{ReasonPolicyDenied}},
		{"non-http scheme", func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Intent.Target = "http.get", contract.A0, "file://127.0.0.1:8099/etc/passwd"
		}, contract.Deny, []string{ReasonPolicyDenied}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.mutate(&in)
			d := Decide(in, policy.Default(), action.Builtin())
			if d.Verdict != tt.verdict || !reflect.DeepEqual(d.Reasons, tt.reasons) {
				t.Fatalf("Decide = %s %v, want %s %v\nchecks: %+v", d.Verdict, d.Reasons, tt.verdict, tt.reasons, d.Checks)
			}
			names := []string{}
			for _, c := range d.Checks {
				names = append(names, c.Name)
			}
			if want := []string{CheckKillSwitch, CheckTenant, CheckPrincipal, CheckGrant, CheckPolicy, CheckApproval}; !reflect.DeepEqual(names, want) {
				t.Fatalf("check order = %v, want %v", names, want)
			}
		})
	}
}

// TestDecideUsesTheRegistryGiven: the action registry is a value passed in;
// a type it does not register fails the grant and policy checks, and its
// registration decides the class and the effect the policy sees.
func TestDecideUsesTheRegistryGiven(t *testing.T) {
	builtin := action.Builtin().List()
	onlyRead, err := action.New(builtin[0])
	if err != nil {
		t.Fatal(err)
	}
	// notes.read: a new type on an existing executor kind and effect.
	notes, err := action.New(append(builtin, action.Registration{Type: "notes.read", Class: contract.A0, ReadOnly: true,
		Description: "a note in the sandbox", Effect: policy.FS, Executor: action.Executor{Kind: action.SandboxRead}},
		action.Registration{Type: "notes.read_v2", Class: contract.A0, ReadOnly: true,
			Description: "a note in the sandbox", Effect: policy.FS, Executor: action.Executor{Kind: action.SandboxRead}})...)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		actions *action.Registry
		mutate  func(*Input)
		verdict string
		reasons []string
	}{
		{"built-in", action.Builtin(), func(*Input) {}, contract.Allow, []string{}},
		{"no registry", nil, func(*Input) {}, contract.Deny, []string{ReasonActionUnknown, ReasonPolicyDenied}},
		{"not in this registry", onlyRead, func(*Input) {}, contract.Deny, []string{ReasonActionUnknown, ReasonPolicyDenied}},
		{"registered type", notes, func(in *Input) { in.Intent.Action, in.Intent.Class = "notes.read", contract.A0 }, contract.Allow, []string{}},
		{"registered type, its effect's policy", notes, func(in *Input) {
			in.Intent.Action, in.Intent.Class, in.Intent.Target = "notes.read", contract.A0, "../x"
		}, contract.Deny, []string{ReasonPolicyDenied}},
		{"registered wide type, a v2 intent", notes, func(in *Input) {
			in.Intent.SchemaVersion, in.Intent.Action, in.Intent.Class = contract.SchemaVersionV2, "notes.read_v2", contract.A0
		}, contract.Allow, []string{}},
		{"registered wide type, a v1 intent", notes, func(in *Input) { in.Intent.Action, in.Intent.Class = "notes.read_v2", contract.A0 },
			contract.Deny, []string{ReasonIntentVersion}},
		{"registered type unknown to the built-ins", action.Builtin(), func(in *Input) { in.Intent.Action, in.Intent.Class = "notes.read", contract.A0 },
			contract.Deny, []string{ReasonActionUnknown, ReasonPolicyDenied}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.mutate(&in)
			d := Decide(in, policy.Default(), tt.actions)
			if d.Verdict != tt.verdict || !reflect.DeepEqual(d.Reasons, tt.reasons) {
				t.Fatalf("Decide = %s %v, want %s %v\nchecks: %+v", d.Verdict, d.Reasons, tt.verdict, tt.reasons, d.Checks)
			}
		})
	}
}

// TestDecideIsDeterministic: the same input always gives byte-identical
// canonical decisions (replay depends on it).
func TestDecideIsDeterministic(t *testing.T) {
	in := baseInput()
	first, err := contract.Canonical(Decide(in, policy.Default(), action.Builtin()))
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		got, _ := contract.Canonical(Decide(in, policy.Default(), action.Builtin()))
		if string(got) != string(first) {
			t.Fatalf("Decide not deterministic:\n%s\n%s", first, got)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	in := baseInput()
	b.ReportAllocs()
	for b.Loop() {
		if Decide(in, policy.Default(), action.Builtin()).Verdict != contract.Allow {
			b.Fatal("not allowed")
		}
	}
}

func BenchmarkDecideHTTP(b *testing.B) {
	in := baseInput()
	in.Intent.Action, in.Intent.Class, in.Intent.Target = "http.get", contract.A0, "http://127.0.0.1:8099/x"
	b.ReportAllocs()
	for b.Loop() {
		if Decide(in, policy.Default(), action.Builtin()).Verdict != contract.Allow {
			b.Fatal("not allowed")
		}
	}
}
