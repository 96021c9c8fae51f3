package auth

import (
	"strings"
	"testing"
)

func classOf(string) string { return "" }

// TestAuditorRank: an auditor sits above an agent and below an operator,
// so nobody mints a credential above their own: an auditor never an
// operator's or an admin's key, an operator (by rank) and an admin an
// auditor's; an admin manages auditor keys.
func TestAuditorRank(t *testing.T) {
	if !ValidRole(RoleAuditor) || ValidRole("root") || ValidRole("") {
		t.Fatal("ValidRole")
	}
	if err := (CreateRequest{Name: "a", Role: RoleAuditor, Tenants: []string{"acme"}, Actions: []string{"A0"}}).Validate(); err != nil {
		t.Fatalf("an auditor key request: %v", err)
	}
	if err := (CreateRequest{Name: "a", Role: "root", Tenants: []string{"acme"}, Actions: []string{"A0"}}).Validate(); err == nil || !strings.Contains(err.Error(), "auditor") {
		t.Fatalf("an unknown role: %v", err)
	}
	holder := func(role string) *Principal {
		return &Principal{ID: "p_" + role, Role: role, Tenants: []string{"acme"}, Actions: []string{"*"}}
	}
	req := func(role string) CreateRequest {
		return CreateRequest{Name: "n", Role: role, Tenants: []string{"acme"}, Actions: []string{"A0"}}
	}
	tests := []struct {
		holder, grants string
		ok             bool
	}{
		{RoleAuditor, RoleOperator, false},
		{RoleAuditor, RoleAdmin, false},
		{RoleAuditor, RoleAuditor, true},
		{RoleAgent, RoleAuditor, false},
		{RoleOperator, RoleAuditor, true},
		{RoleAdmin, RoleAuditor, true},
	}
	for _, tt := range tests {
		err := holder(tt.holder).CanGrant(req(tt.grants), classOf)
		if (err == nil) != tt.ok {
			t.Errorf("%s grants %s: %v, want ok=%t", tt.holder, tt.grants, err, tt.ok)
		}
	}
	aud := holder(RoleAuditor)
	if !holder(RoleAdmin).Manages(aud, classOf) {
		t.Error("an admin does not manage an auditor key")
	}
	if aud.Manages(holder(RoleAgent), classOf) || holder(RoleOperator).Manages(aud, classOf) {
		t.Error("only admins manage keys")
	}
	if got := Roles(); len(got) != 4 || got[1] != RoleAuditor {
		t.Errorf("Roles() = %v", got)
	}
	for i, r := range Roles()[1:] {
		if roleRank(r) <= roleRank(Roles()[i]) {
			t.Errorf("%s ranks no higher than %s", r, Roles()[i])
		}
	}
}
