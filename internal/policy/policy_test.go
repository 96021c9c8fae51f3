package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
)

func TestDefaultBundle(t *testing.T) {
	b := Default()
	if got, err := Builtin().Lookup(b.Hash()); err != nil || got != b {
		t.Fatalf("Builtin().Lookup(default) = %v, %v", got, err)
	}
	if _, err := Builtin().Lookup("nope"); !errors.Is(err, ErrUnknownBundle) {
		t.Fatalf("Builtin().Lookup(nope) = %v", err)
	}
	allow := []string{"api.example.com", "127.0.0.1:8080"}
	tests := []struct {
		effect  Effect
		target  string
		allowed bool
		reason  string
	}{
		{FS, "a/b.txt", true, "fs-inside-sandbox"},
		{FS, "../x", false, "fs-outside-sandbox"},
		{FS, "/etc/passwd", false, "fs-outside-sandbox"},
		{FS, "a/../../x", false, "fs-outside-sandbox"},
		{FS, `a\..\x`, false, "fs-outside-sandbox"},
		{FS, "", false, "fs-outside-sandbox"},
		{HTTP, "https://api.example.com/v1", true, "http-allowlisted-host"},
		{HTTP, "https://API.example.com/v1", true, "http-allowlisted-host"},
		{HTTP, "http://127.0.0.1:8080/x", true, "http-allowlisted-host"},
		{HTTP, "http://127.0.0.1:8081/x", false, "http-host-not-allowlisted"},
		{HTTP, "http://evil.example.com/x", false, "http-host-not-allowlisted"},
		{HTTP, "http://user:pw@api.example.com/", false, "http-host-not-allowlisted"},
		{HTTP, "ftp://api.example.com/", false, "http-host-not-allowlisted"},
		{HTTP, "api.example.com/x", false, "http-host-not-allowlisted"},
		{Effect{}, "rm -rf /", false, "unknown_effect"},
	}
	for _, tt := range tests {
		res := Evaluate(b, Request{PrincipalID: "p", Action: "x.y", Effect: tt.effect, Target: tt.target, Allowlist: allow})
		if res.Allowed != tt.allowed || strings.Join(res.Reasons, ",") != tt.reason || len(res.Errors) != 0 {
			t.Errorf("%s %q = %+v, want allowed=%t %s", tt.effect.Name(), tt.target, res, tt.allowed, tt.reason)
		}
	}
}

func TestCompileRequiresIDs(t *testing.T) {
	if _, err := Compile("x", []byte(`permit(principal, action, resource);`)); err == nil {
		t.Fatal("a policy without @id compiled")
	}
	if _, err := Compile("x", []byte(`@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);`)); err == nil {
		t.Fatal("duplicate @id compiled")
	}
	if _, err := Compile("x", []byte(`permit(`)); err == nil {
		t.Fatal("a syntax error compiled")
	}
}

// TestEvaluationErrorsDeny: a policy that errors at evaluation (missing
// context attribute) denies, even alongside a permit.
func TestEvaluationErrorsDeny(t *testing.T) {
	b, err := Compile("t", []byte(`@id("all") permit(principal, action, resource);
@id("broken") forbid(principal, action, resource) when { context.no_such_attr };`))
	if err != nil {
		t.Fatal(err)
	}
	res := Evaluate(b, Request{PrincipalID: "p", Action: "a", Effect: FS, Target: "a"})
	if res.Allowed || len(res.Errors) == 0 {
		t.Fatalf("Evaluate = %+v, want deny with errors", res)
	}
}

func TestAuthorizeOperations(t *testing.T) {
	b := Default()
	roles := []string{"agent", "operator", "admin", "auditor"}
	tenantOps := map[string][]bool{ // allowed for agent, operator, admin, auditor
		OpPropose: {true, true, true, false}, OpExecute: {true, true, true, false},
		OpReadIntent: {true, true, true, true}, OpReadAudit: {true, true, true, true},
		OpReadTenantIntents: {false, true, true, true}, OpReadTenantAudit: {false, true, true, true},
		OpReadApprovals: {false, true, true, true}, OpReadTenantSwitch: {false, true, true, true},
		OpApprove: {false, true, true, false}, OpResolve: {false, true, true, false}, OpFlipTenantSwitch: {false, true, true, false},
		OpFlipGlobalSwitch: {false, false, false, false}, OpManageKeys: {false, false, true, false}, OpKeyManagement: {false, false, false, false},
	}
	for op, want := range tenantOps {
		for i, role := range roles {
			res := Authorize(b, OpRequest{PrincipalID: "p", Role: role, Granted: []string{"acme"}, Operation: op, Tenant: "acme"})
			if res.Allowed != want[i] || len(res.Errors) != 0 {
				t.Errorf("%s %s on acme = %+v, want %t", role, op, res, want[i])
			}
			// Never in a tenant not granted.
			if res := Authorize(b, OpRequest{PrincipalID: "p", Role: role, Granted: []string{"acme"}, Operation: op, Tenant: "beta"}); res.Allowed {
				t.Errorf("%s %s on an ungranted tenant allowed", role, op)
			}
		}
	}
	// Global powers need the explicit system grant; no role implies them.
	systemOps := map[string][]bool{OpReadGlobalSwitch: {false, false, true, false}, OpFlipGlobalSwitch: {false, false, true, false}, OpManageKeys: {false, false, true, false}, OpReadMetrics: {false, false, true, false}, OpPropose: {false, false, false, false}}
	for op, want := range systemOps {
		for i, role := range roles {
			if res := Authorize(b, OpRequest{PrincipalID: "p", Role: role, Granted: []string{"acme", "system"}, Operation: op}); res.Allowed != want[i] {
				t.Errorf("%s %s on the system with the system grant = %+v, want %t", role, op, res, want[i])
			}
			if res := Authorize(b, OpRequest{PrincipalID: "p", Role: role, Granted: []string{"acme"}, Operation: op}); res.Allowed {
				t.Errorf("%s %s on the system without the system grant allowed", role, op)
			}
		}
	}
	// The key endpoints are open to every admin: what they show and change
	// is manage_keys per tenant (internal/access).
	for i, role := range roles {
		if res := Authorize(b, OpRequest{PrincipalID: "p", Role: role, Granted: []string{"acme"}, Operation: OpKeyManagement}); res.Allowed != (i == 2) {
			t.Errorf("%s key_management = %+v", role, res)
		}
	}
	if res := Authorize(b, OpRequest{PrincipalID: "p", Role: "root", Granted: []string{"acme"}, Operation: OpApprove, Tenant: "acme"}); res.Allowed {
		t.Error("an unknown role was authorized")
	}
}

// TestHistoryReplays: every earlier default bundle is registered under its
// hash, so decisions recorded under it still find it.
func TestHistoryReplays(t *testing.T) {
	entries, err := history.ReadDir("history")
	if err != nil || len(entries) == 0 {
		t.Fatalf("history: %v (%d bundles)", err, len(entries))
	}
	for _, e := range entries {
		src, _ := history.ReadFile("history/" + e.Name())
		if _, err := Builtin().Lookup(contract.Hash(src)); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
	}
	if _, err := Builtin().Lookup("e75ba5324c8d7539a399672a86fa286c184ea4085e94dfa6ced014e3fb2b9001"); err != nil {
		t.Errorf("the bundle of the first milestone's records: %v", err)
	}
}

// TestContextCachesArePure: a bundle caches request contexts; whatever was
// evaluated before, a request must get the result a fresh bundle gives it,
// including allowlists that a naive cache key would confuse.
func TestContextCachesArePure(t *testing.T) {
	fresh := func() *Bundle {
		b, err := Compile("default.cedar", defaultSource)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var reqs []Request
	for _, allow := range [][]string{nil, {}, {""}, {"api.example.com"}, {"API.example.com"}, {"a\x00api.example.com"},
		{"a", "api.example.com"}, {"api.example.com", "b\x00c"}, {"api.example.com\x00b", "c"}, {"api.example.com", "127.0.0.1:8080"}, {"127.0.0.1:8080", "api.example.com"}} {
		for _, target := range []string{"https://api.example.com/v1", "http://127.0.0.1:8080/x", "ftp://api.example.com/", "https://a/", "http://:80/x"} {
			reqs = append(reqs, Request{PrincipalID: "p", Role: "agent", Action: "http.get", Class: "A0", Effect: HTTP, Target: target, Allowlist: allow})
		}
	}
	for _, target := range []string{"a/b.txt", "../x"} {
		for _, role := range []string{"agent", "admin"} {
			reqs = append(reqs, Request{PrincipalID: "p", Role: role, Action: "fs.read", Class: "A0", Effect: FS, Target: target})
		}
	}
	want := make([]string, len(reqs))
	for i, r := range reqs {
		want[i] = fmt.Sprintf("%+v", Evaluate(fresh(), r))
	}
	for _, order := range []string{"forward", "backward"} {
		b := fresh()
		for j := range reqs {
			i := j
			if order == "backward" {
				i = len(reqs) - 1 - j
			}
			// twice: once building the context, once from the cache
			for range 2 {
				if got := fmt.Sprintf("%+v", Evaluate(b, reqs[i])); got != want[i] {
					t.Fatalf("%s: %q with allowlist %q = %s, a fresh bundle says %s", order, reqs[i].Target, reqs[i].Allowlist, got, want[i])
				}
			}
		}
	}
}
