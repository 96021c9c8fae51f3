package access_test

import (
	"context"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestReadScope: operators, admins and auditors read the whole tenant; an
// agent only what it owns, and another's object reads as not found,
// audited as access.forbidden in the tenant's chain; a tenant not granted
// is nobody's whole view.
func TestReadScope(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acme, beta := tenant.MustParse("acme"), tenant.MustParse("beta")
	for _, role := range []string{auth.RoleAgent, auth.RoleAuditor, auth.RoleOperator, auth.RoleAdmin} {
		_, p := f.bootstrap(t, role, role, []string{"acme"}, []string{"A0"})
		for _, op := range []string{policy.OpReadTenantIntents, policy.OpReadTenantAudit} {
			sc := f.svc.ReadScope(access.Request{Principal: p, Operation: op, Tenant: acme})
			if sc.Whole() != (role != auth.RoleAgent) || !sc.Covers(p.ID) {
				t.Errorf("%s %s on acme: scope %+v", role, op, sc)
			}
			if sc := f.svc.ReadScope(access.Request{Principal: p, Operation: op, Tenant: beta}); sc.Whole() {
				t.Errorf("%s %s on beta: the whole tenant", role, op)
			}
			err := f.svc.AuthorizeOwned(ctx, access.Request{Principal: p, Operation: op, Tenant: acme}, "key_someone_else")
			if want := role != auth.RoleAgent; (err == nil) != want || (err != nil && contract.ErrorCode(err) != contract.CodeNotFound) {
				t.Errorf("%s reads another's on acme: %v", role, err)
			}
			if err := f.svc.AuthorizeOwned(ctx, access.Request{Principal: p, Operation: op, Tenant: acme}, p.ID); err != nil {
				t.Errorf("%s reads its own: %v", role, err)
			}
		}
	}
	if sc := f.svc.ReadScope(access.Request{Operation: policy.OpReadTenantAudit, Tenant: acme}); sc.Whole() || sc.Covers("") {
		t.Errorf("no principal: scope %+v", sc)
	}
	var refused int
	if err := f.log.Scan(ctx, acme, 0, 0, func(raw []byte, rec contract.AuditRecord) error {
		if rec.Kind == access.KindForbidden && strings.Contains(string(raw), "not the principal's own") {
			refused++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if refused != 2 { // the agent, once per operation
		t.Fatalf("%d refusals audited in acme's chain, want 2", refused)
	}
}
