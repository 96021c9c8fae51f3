package approval

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestBuiltinRules: the built-in rules parse and ask exactly the floor
// (what every decision recorded before rules were declared was decided
// under); an unknown class gets A3's.
func TestBuiltinRules(t *testing.T) {
	r := BuiltinRules()
	acme := tenant.MustParse("acme")
	for class, want := range map[string]int{contract.A0: 0, contract.A1: 1, contract.A2: 1, contract.A3: 2, "A9": 2, "": 2} {
		if got := r.Required(acme, class); got != want {
			t.Errorf("Required(%q) = %d, want %d", class, got, want)
		}
		if got := Floor(class); got != want {
			t.Errorf("Floor(%q) = %d, want %d", class, got, want)
		}
	}
}

// TestParseRules: declared rules may raise what a class needs and narrow
// who approves it, per tenant; anything below the floor, unknown or
// malformed is refused with a message naming it.
func TestParseRules(t *testing.T) {
	const def = `"default": {"A0": {"approvals": 0, "roles": ["operator", "admin"]}, "A1": {"approvals": 1, "roles": ["operator", "admin"]}, "A2": {"approvals": 1, "roles": ["operator", "admin"]}, "A3": {"approvals": 2, "roles": ["operator", "admin"]}}`
	for _, c := range []struct {
		name, json, want string // want: a substring of the error, "" for none
	}{
		{"builtin form", `{` + def + `}`, ""},
		{"tenant raises A0 and A3", `{` + def + `, "tenants": {"acme": {"A0": {"approvals": 1}, "A3": {"approvals": 3, "roles": ["operator"]}}}}`, ""},
		{"A3 lowered", `{"default": {"A0": {"approvals": 0, "roles": []}, "A1": {"approvals": 1, "roles": ["operator"]}, "A2": {"approvals": 1, "roles": ["operator"]}, "A3": {"approvals": 1, "roles": ["operator"]}}}`, "class A3: 1 approvals is below the least allowed (2)"},
		{"tenant lowers A1", `{` + def + `, "tenants": {"acme": {"A1": {"approvals": 0}}}}`, "tenant acme: class A1: 0 approvals is below the least allowed (1)"},
		{"class missing", `{"default": {"A0": {"approvals": 0, "roles": []}}}`, "class A1 is missing"},
		{"unknown class", `{` + def + `, "tenants": {"acme": {"A4": {"approvals": 1}}}}`, `unknown field "A4"`},
		{"agent may not approve", `{` + def + `, "tenants": {"acme": {"A2": {"roles": ["agent"]}}}}`, `role "agent" may not approve`},
		{"nobody may approve", `{` + def + `, "tenants": {"acme": {"A2": {"roles": []}}}}`, "no role may approve"},
		{"bad tenant", `{` + def + `, "tenants": {"Acme.*": {"A2": {"approvals": 2}}}}`, "tenants:"},
		{"unknown field", `{` + def + `, "tenant": {}}`, `unknown field "tenant"`},
		{"null tenant", `{` + def + `, "tenants": {"acme": null}}`, "null"},
		{"no default", `{"tenants": {}}`, "default: missing"},
		{"consent declared", `{` + def + `, "tenants": {"acme": {"approver_key_consent": true}}}`, ""},
		{"trailing data", `{` + def + `} {}`, "trailing data"},
		{"too many", `{` + def + `, "tenants": {"acme": {"A3": {"approvals": 9}}}}`, "more than 5"},
		{"a class twice in two cases", `{` + def + `, "tenants": {"acme": {"A3": {"approvals": 3}, "a3": {"approvals": 2}}}}`, `"a3" appears twice`},
		{"a tenant twice", `{` + def + `, "tenants": {"acme": {"A3": {"approvals": 4}}, "acme": {"A0": {"approvals": 1}}}}`, `"acme" appears twice`},
		{"a field twice", `{` + def + `, "tenants": {"acme": {"A3": {"approvals": 3, "Approvals": 2}}}}`, `"Approvals" appears twice`},
		{"arrays and nesting", `{` + def + `, "tenants": {"acme": {"A3": {"approvals": 3, "roles": ["operator", "admin"]}, "A2": {"roles": ["admin"]}}, "beta": {}}}`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRules([]byte(c.json))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", c.want)
			case c.want != "" && (!strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrRules)):
				t.Fatalf("error %q, want ErrRules containing %q", err, c.want)
			}
		})
	}
}

// TestRulesPerTenant: a tenant's rule applies to it alone; unset fields
// keep the default; Eligible follows the roles the rule names.
func TestRulesPerTenant(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRules(data)
	if err != nil {
		t.Fatal(err)
	}
	acme, beta := tenant.MustParse("acme"), tenant.MustParse("beta")
	if got := r.Required(acme, contract.A0); got != 1 {
		t.Errorf("acme A0 needs %d, want 1", got)
	}
	if got := r.Required(beta, contract.A0); got != 0 {
		t.Errorf("beta A0 needs %d, want 0 (the default)", got)
	}
	if got := r.Required(acme, contract.A3); got != 3 {
		t.Errorf("acme A3 needs %d, want 3", got)
	}
	if !r.ApproverKeysNeedConsent(acme) || r.ApproverKeysNeedConsent(beta) {
		t.Errorf("consent: acme %v, beta %v; want acme only", r.ApproverKeysNeedConsent(acme), r.ApproverKeysNeedConsent(beta))
	}
	if got := r.Rule(acme, contract.A0).Roles; len(got) != 2 {
		t.Errorf("acme A0 roles %v, want the default's two", got)
	}
	del := contract.ActionIntent{Action: "fs.delete", Class: contract.A3, Proposer: "bot"}
	admin := &auth.Principal{ID: "adm", Role: auth.RoleAdmin, Tenants: []string{"acme", "beta"}, Actions: []string{"*"}}
	op := &auth.Principal{ID: "op", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}
	if err := r.Eligible(acme, del, admin); !errors.Is(err, ErrNotOperator) || !strings.Contains(err.Error(), "approved by operator") {
		t.Errorf("an admin voting on an acme A3 (operators only): %v, want ErrNotOperator naming the roles", err)
	}
	if err := r.Eligible(beta, del, admin); err != nil {
		t.Errorf("an admin voting on a beta A3 (default roles): %v", err)
	}
	if err := r.Eligible(acme, del, op); err != nil {
		t.Errorf("an operator voting on an acme A3: %v", err)
	}
	if err := r.Eligible(beta, del, op); !errors.Is(err, ErrNotOperator) {
		t.Errorf("an acme operator voting in beta: %v, want ErrNotOperator", err)
	}
}

// FuzzParseRules: any input is refused with ErrRules or yields rules that
// never ask less than the floor and let only operators or admins approve.
func FuzzParseRules(f *testing.F) {
	f.Add(builtinRules)
	if data, err := os.ReadFile(filepath.Join("testdata", "rules.json")); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"default": null}`))
	f.Add([]byte(`{"default": {"A0": {"approvals": -1}}}`))
	acme := tenant.MustParse("acme")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRules(data)
		if err != nil {
			if !errors.Is(err, ErrRules) {
				t.Fatalf("error without ErrRules: %v", err)
			}
			return
		}
		for _, class := range classes {
			for _, tn := range append([]tenant.ID{acme}, slices.Collect(maps.Keys(r.tenants))...) {
				rule := r.Rule(tn, class)
				if rule.Approvals < Floor(class) {
					t.Fatalf("%s %s needs %d, below the floor %d", tn, class, rule.Approvals, Floor(class))
				}
				for _, role := range rule.Roles {
					if !CanApprove(role) {
						t.Fatalf("%s %s lets %q approve", tn, class, role)
					}
				}
			}
		}
	})
}
