package access_test

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

type fixture struct {
	svc  *access.Service
	keys *auth.Keys
	log  *audit.Log
}

// newFixture is the access layer on a real embedded JetStream store; opts
// change its configuration.
func newFixture(t testing.TB, opts ...func(*access.Config)) *fixture {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	keys := auth.NewKeys(st.Principals, rand.Reader, time.Now)
	cfg := access.Config{Keys: keys, Certs: keys, KeyAdmin: keys, Audit: log}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := access.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, keys: keys, log: log}
}

// bootstrap creates a credential the way `exoarmur keys create` does (no
// caller: the store-direct command).
func (f *fixture) bootstrap(t testing.TB, name, role string, tenants, actions []string) (string, *auth.Principal) {
	t.Helper()
	key, p, err := f.keys.Create(context.Background(), auth.CreateRequest{Name: name, Role: role, Tenants: tenants, Actions: actions, CreatedBy: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	return key, &p
}

func code(err error) string {
	if err == nil {
		return ""
	}
	return contract.ErrorCode(err)
}

// kinds returns the kinds of t's audit records.
func (f *fixture) kinds(t testing.TB, tn tenant.ID) []string {
	t.Helper()
	var out []string
	if err := f.log.Scan(context.Background(), tn, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		out = append(out, r.Kind)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestForeignAdminCannotTakeOverATenant is break 1 of issue 13: an admin
// granted only beta minted keys for acme (any role, any actions), read
// acme's audit, revoked acme's keys and, with two self-minted operators,
// approved and ran an irreversible action in acme alone.
func TestForeignAdminCannotTakeOverATenant(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acme, beta := tenant.MustParse("acme"), tenant.MustParse("beta")
	_, betaAdmin := f.bootstrap(t, "beta-admin", auth.RoleAdmin, []string{"beta"}, []string{"*"})
	acmeBotKey, acmeBot := f.bootstrap(t, "acme-bot", auth.RoleAgent, []string{"acme"}, []string{"*"})

	// Minting for a tenant it does not hold: not found, nothing created.
	for _, req := range []auth.CreateRequest{
		{Name: "op1", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}},
		{Name: "op2", Role: auth.RoleOperator, Tenants: []string{"acme", "beta"}, Actions: []string{"*"}},
	} {
		if _, _, err := f.svc.CreateKey(ctx, betaAdmin, req, access.Meta{}); code(err) != contract.CodeNotFound {
			t.Errorf("beta admin creating %v: %v, want not_found", req.Tenants, err)
		}
	}
	// The system grant is a global power, refused as such.
	if _, _, err := f.svc.CreateKey(ctx, betaAdmin, auth.CreateRequest{Name: "root", Role: auth.RoleAdmin, Tenants: []string{auth.SystemGrant}, Actions: []string{"*"}}, access.Meta{}); code(err) != contract.CodeForbidden {
		t.Errorf("beta admin creating a system key: %v, want forbidden", err)
	}
	all, err := f.keys.List(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("registry holds %d keys (%v), want the 2 bootstrapped", len(all), err)
	}
	// Reading acme's audit, flipping its switch, approving there: not found.
	for _, op := range []string{policy.OpReadAudit, policy.OpApprove, policy.OpFlipTenantSwitch, policy.OpExecute} {
		if err := f.svc.Authorize(ctx, access.Request{Principal: betaAdmin, Operation: op, Tenant: acme}); code(err) != contract.CodeNotFound {
			t.Errorf("beta admin %s on acme: %v, want not_found", op, err)
		}
	}
	// Global powers are not a side effect of the admin role.
	for _, op := range []string{policy.OpFlipGlobalSwitch, policy.OpReadGlobalSwitch, policy.OpReadMetrics, policy.OpManageKeys} {
		if err := f.svc.Authorize(ctx, access.Request{Principal: betaAdmin, Operation: op}); code(err) != contract.CodeForbidden {
			t.Errorf("beta admin %s on the system: %v, want forbidden", op, err)
		}
	}
	// Revoking acme's key: not found, and the key still works.
	if _, err := f.svc.RevokeKey(ctx, betaAdmin, acmeBot.ID, access.Meta{}); code(err) != contract.CodeNotFound {
		t.Errorf("beta admin revoking an acme key: %v, want not_found", err)
	}
	if _, err := f.keys.Authenticate(ctx, acmeBotKey); err != nil {
		t.Errorf("the acme key stopped working: %v", err)
	}
	// Listing shows beta's keys only.
	ps, err := f.svc.ListKeys(ctx, betaAdmin, access.Meta{})
	if err != nil || len(ps) != 1 || ps[0].ID != betaAdmin.ID {
		t.Errorf("beta admin lists %v (%v), want only itself", ps, err)
	}
	// In its own tenant it works, and the creation is in beta's chain,
	// never in acme's.
	_, p, err := f.svc.CreateKey(ctx, betaAdmin, auth.CreateRequest{Name: "beta-bot", Role: auth.RoleAgent, Tenants: []string{"beta"}, Actions: []string{"fs.read"}}, access.Meta{})
	if err != nil || p.CreatedBy != betaAdmin.ID || p.Owner != "beta-bot" {
		t.Fatalf("beta admin creating a beta key: %+v, %v", p, err)
	}
	if k := f.kinds(t, beta); !slices.Contains(k, access.KindKeyCreated) || !slices.Contains(k, access.KindCrossTenant) {
		t.Errorf("beta's chain %v lacks %s or the cross-tenant attempts", k, access.KindKeyCreated)
	}
	if k := f.kinds(t, acme); len(k) != 0 {
		t.Errorf("acme's chain %v: the attempts belong in the caller's chain, never in acme's", k)
	}
}

// TestNoCredentialBeyondYourOwn: tenants, role and actions of a new key
// are within its creator's; the system grant only from a system admin.
func TestNoCredentialBeyondYourOwn(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, admin := f.bootstrap(t, "acme-admin", auth.RoleAdmin, []string{"acme"}, []string{"A0", "fs.write"})
	_, op := f.bootstrap(t, "acme-op", auth.RoleOperator, []string{"acme"}, []string{"*"})
	_, root := f.bootstrap(t, "root", auth.RoleAdmin, []string{auth.SystemGrant}, []string{"*"})
	cases := []struct {
		name   string
		caller *auth.Principal
		req    auth.CreateRequest
		want   string
	}{
		{"within: a reader", admin, auth.CreateRequest{Name: "r", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"fs.read"}}, ""},
		{"within: the class it holds", admin, auth.CreateRequest{Name: "r", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}}, ""},
		{"within: a type it holds", admin, auth.CreateRequest{Name: "w", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"fs.write"}}, ""},
		{"beyond: a class of which it holds one type", admin, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A1"}}, contract.CodeForbidden},
		{"beyond: an action it lacks", admin, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"fs.delete"}}, contract.CodeForbidden},
		{"beyond: everything", admin, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}}, contract.CodeForbidden},
		{"beyond: the system grant", admin, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{auth.SystemGrant}, Actions: []string{"A0"}}, contract.CodeForbidden},
		{"an operator manages no keys", op, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}}, contract.CodeForbidden},
		{"system: any tenant", root, auth.CreateRequest{Name: "b", Role: auth.RoleAdmin, Tenants: []string{"beta"}, Actions: []string{"*"}}, ""},
		{"system: another system key", root, auth.CreateRequest{Name: "s", Role: auth.RoleAdmin, Tenants: []string{auth.SystemGrant}, Actions: []string{"A0"}}, ""},
		{"invalid: no tenant", root, auth.CreateRequest{Name: "s", Role: auth.RoleAdmin, Actions: []string{"A0"}}, contract.CodeInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := f.keys.List(ctx)
			_, p, err := f.svc.CreateKey(ctx, c.caller, c.req, access.Meta{})
			if code(err) != c.want {
				t.Fatalf("CreateKey = %v, want code %q", err, c.want)
			}
			after, _ := f.keys.List(ctx)
			if c.want != "" && len(after) != len(before) {
				t.Errorf("a refused creation changed the registry: %d -> %d keys", len(before), len(after))
			}
			if c.want == "" && p.CreatedBy != c.caller.ID {
				t.Errorf("created_by = %q, want %q", p.CreatedBy, c.caller.ID)
			}
		})
	}
	// A system admin revokes a tenant's key; a tenant admin cannot revoke
	// a system key.
	if _, err := f.svc.RevokeKey(ctx, admin, root.ID, access.Meta{}); code(err) != contract.CodeNotFound {
		t.Errorf("tenant admin revoking the system key: %v", err)
	}
	if _, err := f.svc.RevokeKey(ctx, root, op.ID, access.Meta{}); err != nil {
		t.Errorf("system admin revoking an acme key: %v", err)
	}
	if _, err := f.keys.Principal(ctx, op.ID); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("revoked key still resolves: %v", err)
	}
	if err := f.svc.Authorize(ctx, access.Request{Principal: root, Operation: policy.OpFlipGlobalSwitch}); err != nil {
		t.Errorf("system admin flipping the global switch: %v", err)
	}
}

// TestReviewFindings: what an adversarial review found after the first
// fix: a key outliving its creator's, a system-only admin's cross-tenant
// attempt unaudited, an A0 admin revoking a more powerful admin, and a key
// whose creation was not audited left in place.
func TestReviewFindings(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	soon := time.Now().Add(time.Hour)
	_, p, err := f.keys.Create(ctx, auth.CreateRequest{Name: "temp-admin", Role: auth.RoleAdmin, Tenants: []string{"acme"}, Actions: []string{"*"}, ExpiresAt: soon})
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []time.Time{{}, soon.Add(time.Minute)} {
		if _, _, err := f.svc.CreateKey(ctx, &p, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}, ExpiresAt: exp}, access.Meta{}); code(err) != contract.CodeForbidden {
			t.Errorf("a key expiring %v minted by one expiring %v: %v, want forbidden", exp, soon, err)
		}
	}
	if _, _, err := f.svc.CreateKey(ctx, &p, auth.CreateRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}, ExpiresAt: soon.Add(-time.Minute)}, access.Meta{}); err != nil {
		t.Errorf("a key expiring before its creator's: %v", err)
	}

	_, root := f.bootstrap(t, "root", auth.RoleAdmin, []string{auth.SystemGrant}, []string{"*"})
	before := len(f.kinds(t, tenant.System))
	if err := f.svc.Authorize(ctx, access.Request{Principal: root, Operation: policy.OpReadAudit, Tenant: tenant.MustParse("acme")}); code(err) != contract.CodeNotFound {
		t.Fatalf("system-only admin reading acme's audit: %v", err)
	}
	if after := f.kinds(t, tenant.System); len(after) != before+1 || after[len(after)-1] != access.KindCrossTenant {
		t.Errorf("the system-only admin's cross-tenant attempt is not in the system chain: %v", after[before:])
	}

	_, weak := f.bootstrap(t, "weak-admin", auth.RoleAdmin, []string{"acme"}, []string{"A0"})
	_, strong := f.bootstrap(t, "strong-admin", auth.RoleAdmin, []string{"acme"}, []string{"*"})
	if _, err := f.svc.RevokeKey(ctx, weak, strong.ID, access.Meta{}); code(err) != contract.CodeNotFound {
		t.Errorf("an A0 admin revoking a * admin: %v, want not_found", err)
	}

	// An audit that fails: the new key must not survive unaudited.
	broken, err := access.New(access.Config{Keys: f.keys, KeyAdmin: f.keys, Audit: failingAuditor{}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := broken.CreateKey(ctx, strong, auth.CreateRequest{Name: "ghost", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}}, access.Meta{})
	if code(err) != contract.CodeStoreUnavailable || key != "" {
		t.Fatalf("creation with a failing audit = %q, %v", key, err)
	}
	all, _ := f.keys.List(ctx)
	for _, k := range all {
		if k.Name == "ghost" && !k.Revoked {
			t.Error("an unaudited key was left usable")
		}
	}
}

type failingAuditor struct{}

func (failingAuditor) Append(context.Context, tenant.ID, audit.Entry) (contract.AuditRecord, error) {
	return contract.AuditRecord{}, errors.New("audit stream unavailable (injected)")
}
