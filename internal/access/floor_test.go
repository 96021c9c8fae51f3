package access_test

import (
	"context"
	"errors"
	"testing"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestFloorsHoldWhateverTheBundle: a bundle that permits every operation
// to everyone (compiled directly, past the load-time lint, as a bundle
// written to the store by hand would be) still cannot let an agent or an
// auditor act beyond its role, nor anyone use a global power without the
// system grant, in any tenant.
func TestFloorsHoldWhateverTheBundle(t *testing.T) {
	open, err := policy.Compile("open", append(policy.Default().Source(), []byte("\n@id(\"everything\")\n@scope(\"operation\")\npermit (principal, action, resource);\n")...))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *access.Config) { c.Policy = open })
	ctx := context.Background()
	_, agent := f.bootstrap(t, "agent", auth.RoleAgent, []string{"evil"}, []string{"*"})
	_, auditor := f.bootstrap(t, "auditor", auth.RoleAuditor, []string{"evil"}, []string{"*"})
	_, admin := f.bootstrap(t, "admin", auth.RoleAdmin, []string{"evil"}, []string{"*"})
	evil := tenant.MustParse("evil")
	for _, tc := range []struct {
		name string
		p    *auth.Principal
		op   string
		t    tenant.ID
	}{
		{"agent flips its tenant's switch", agent, policy.OpFlipTenantSwitch, evil},
		{"agent approves", agent, policy.OpApprove, evil},
		{"agent resolves", agent, policy.OpResolve, evil},
		{"agent reads the whole audit", agent, policy.OpReadTenantAudit, evil},
		{"agent reads every intent", agent, policy.OpReadTenantIntents, evil},
		{"agent activates a policy", agent, policy.OpActivatePolicy, evil},
		{"agent manages keys", agent, policy.OpManageKeys, evil},
		{"auditor proposes", auditor, policy.OpPropose, evil},
		{"auditor executes", auditor, policy.OpExecute, evil},
		{"auditor flips", auditor, policy.OpFlipTenantSwitch, evil},
		{"auditor activates", auditor, policy.OpActivatePolicy, evil},
		{"admin without the system grant flips the global switch", admin, policy.OpFlipGlobalSwitch, tenant.ID{}},
		{"admin without the system grant activates globally", admin, policy.OpActivateGlobalPolicy, tenant.ID{}},
		{"admin without the system grant manages every key", admin, policy.OpManageKeys, tenant.ID{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.svc.Authorize(ctx, access.Request{Principal: tc.p, Operation: tc.op, Tenant: tc.t})
			if code(err) != contract.CodeForbidden {
				t.Fatalf("err %v, want forbidden", err)
			}
		})
	}
	// What the roles may do, the open bundle permits.
	if err := f.svc.Authorize(ctx, access.Request{Principal: agent, Operation: policy.OpPropose, Tenant: evil}); err != nil {
		t.Fatalf("agent proposes: %v", err)
	}
}

// brokenSource is a PolicySource whose bundle in force cannot be used.
type brokenSource struct{}

var errBroken = errors.New("active policy bundle unavailable: test")

func (brokenSource) For(tenant.ID) (*policy.Bundle, string, error) {
	return nil, "0000000000000000000000000000000000000000000000000000000000000000", errBroken
}
func (brokenSource) Base() *policy.Bundle { return policy.Default() }

// TestUnusableBundleKeepsTheWayOut: with the bundle in force unusable on
// this node, ordinary operations are refused with a machine-readable
// store_unavailable naming why, while activating another bundle and the
// switches are decided under the node's own bundle.
func TestUnusableBundleKeepsTheWayOut(t *testing.T) {
	f := newFixture(t, func(c *access.Config) { c.Policies = brokenSource{} })
	ctx := context.Background()
	_, agent := f.bootstrap(t, "agent", auth.RoleAgent, []string{"acme"}, []string{"*"})
	_, op := f.bootstrap(t, "op", auth.RoleOperator, []string{"acme"}, []string{"*"})
	_, root := f.bootstrap(t, "root", auth.RoleAdmin, []string{"acme", auth.SystemGrant}, []string{"*"})
	acme := tenant.MustParse("acme")
	if err := f.svc.Authorize(ctx, access.Request{Principal: agent, Operation: policy.OpPropose, Tenant: acme}); code(err) != contract.CodeStoreUnavailable {
		t.Fatalf("propose under an unusable bundle: %v, want store_unavailable", err)
	}
	for _, tc := range []struct {
		p  *auth.Principal
		op string
		t  tenant.ID
	}{
		{op, policy.OpActivatePolicy, acme}, {op, policy.OpFlipTenantSwitch, acme}, {op, policy.OpReadTenantSwitch, acme},
		{root, policy.OpActivateGlobalPolicy, tenant.ID{}}, {root, policy.OpFlipGlobalSwitch, tenant.ID{}}, {root, policy.OpReadGlobalSwitch, tenant.ID{}},
	} {
		if err := f.svc.Authorize(ctx, access.Request{Principal: tc.p, Operation: tc.op, Tenant: tc.t}); err != nil {
			t.Fatalf("%s %s under an unusable bundle: %v, want allowed under the node's own", tc.p.Role, tc.op, err)
		}
	}
	// The node's own bundle still refuses what it refuses.
	if err := f.svc.Authorize(ctx, access.Request{Principal: agent, Operation: policy.OpActivatePolicy, Tenant: acme}); code(err) != contract.CodeForbidden {
		t.Fatalf("an agent activating: %v", err)
	}
}
