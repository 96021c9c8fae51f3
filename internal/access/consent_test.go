package access_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestApproverKeysNeedASecondAdmin: in a tenant whose approval rules ask
// for it, a key able to approve that an admin creates does not
// authenticate until another person's admin key consents; the creator, a
// second key of the creator's owner, the key's own owner and a foreign
// admin cannot consent; agents' keys and keys of other tenants need none;
// every step is in the tenant's chain.
func TestApproverKeysNeedASecondAdmin(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "approval", "testdata", "rules.json")) // acme: approver_key_consent
	if err != nil {
		t.Fatal(err)
	}
	rules, err := approval.ParseRules(data)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *access.Config) { c.Consent = rules })
	ctx := context.Background()
	acme := tenant.MustParse("acme")
	_, alice := f.bootstrap(t, "alice", auth.RoleAdmin, []string{"acme", "beta"}, []string{"*"})
	_, bob := f.bootstrap(t, "bob", auth.RoleAdmin, []string{"acme", "beta"}, []string{"*"})
	_, betaAdmin := f.bootstrap(t, "beta-admin", auth.RoleAdmin, []string{"beta"}, []string{"*"})
	// A second key of alice's (same owner).
	_, alice2p, err := f.keys.Create(ctx, auth.CreateRequest{Name: "alice-phone", Owner: "alice", Role: auth.RoleAdmin, Tenants: []string{"acme", "beta"}, Actions: []string{"*"}, CreatedBy: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	alice2 := &alice2p

	opKey, op, err := f.svc.CreateKey(ctx, alice, auth.CreateRequest{Name: "carol", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}, access.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if !op.PendingConsent {
		t.Fatalf("an acme operator key created over the API: %+v, want pending consent", op)
	}
	if _, err := f.svc.Authenticate(ctx, access.Credentials{APIKey: opKey, Source: "t"}, access.Meta{}); code(err) != contract.CodeUnauthenticated {
		t.Fatalf("a pending key authenticates: %v, want unauthenticated", err)
	}
	// Agents cannot approve: no consent. Beta asks for none.
	if _, p, err := f.svc.CreateKey(ctx, alice, auth.CreateRequest{Name: "bot", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}}, access.Meta{}); err != nil || p.PendingConsent {
		t.Fatalf("an acme agent key: %+v %v, want active", p, err)
	}
	if _, p, err := f.svc.CreateKey(ctx, alice, auth.CreateRequest{Name: "dave", Role: auth.RoleOperator, Tenants: []string{"beta"}, Actions: []string{"*"}}, access.Meta{}); err != nil || p.PendingConsent {
		t.Fatalf("a beta operator key: %+v %v, want active", p, err)
	}

	why := access.Consent{PrincipalID: op.ID, Reason: "carol joins the on-call rota"}
	for _, c := range []struct {
		name   string
		caller *auth.Principal
		c      access.Consent
		want   string
	}{
		{"the creator", alice, why, contract.CodeSelfApproval},
		{"the creator's other key", alice2, why, contract.CodeSelfApproval},
		{"a foreign admin", betaAdmin, why, contract.CodeNotFound},
		{"no reason", bob, access.Consent{PrincipalID: op.ID}, contract.CodeInvalid},
		{"an unknown key", bob, access.Consent{PrincipalID: "key_0000000000000000", Reason: "x"}, contract.CodeNotFound},
	} {
		if _, err := f.svc.ConsentKey(ctx, c.caller, c.c, access.Meta{}); code(err) != c.want {
			t.Errorf("consent by %s: %v, want %s", c.name, err, c.want)
		}
	}
	if _, err := f.svc.Authenticate(ctx, access.Credentials{APIKey: opKey, Source: "t"}, access.Meta{}); err == nil {
		t.Fatal("a refused consent enabled the key")
	}
	p, err := f.svc.ConsentKey(ctx, bob, why, access.Meta{})
	if err != nil || p.PendingConsent || p.ConsentedBy != bob.ID {
		t.Fatalf("bob's consent: %+v %v", p, err)
	}
	if got, err := f.svc.Authenticate(ctx, access.Credentials{APIKey: opKey, Source: "t"}, access.Meta{}); err != nil || got.ID != op.ID {
		t.Fatalf("the consented key: %v %v", got, err)
	}
	if _, err := f.svc.ConsentKey(ctx, bob, why, access.Meta{}); code(err) != contract.CodeConflict {
		t.Errorf("a second consent: %v, want conflict", err)
	}
	// An operator consenting to its own pending admin key is refused too.
	_, ownKey, err := f.svc.CreateKey(ctx, bob, auth.CreateRequest{Name: "carol-admin", Owner: "carol", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}, access.Meta{})
	if err != nil || !ownKey.PendingConsent {
		t.Fatalf("carol's second key: %+v %v", ownKey, err)
	}
	carolAdminKey, carolAdmin, err := f.keys.Create(ctx, auth.CreateRequest{Name: "carol-root", Owner: "carol", Role: auth.RoleAdmin, Tenants: []string{"acme"}, Actions: []string{"*"}, CreatedBy: "cli"})
	if err != nil || carolAdminKey == "" {
		t.Fatal(err)
	}
	if _, err := f.svc.ConsentKey(ctx, &carolAdmin, access.Consent{PrincipalID: ownKey.ID, Reason: "mine"}, access.Meta{}); code(err) != contract.CodeSelfApproval {
		t.Errorf("the key's own owner consenting: %v, want self_approval", err)
	}

	kinds := f.kinds(t, acme)
	if slices.Index(kinds, access.KindKeyConsented) < 0 || slices.Index(kinds, access.KindForbidden) < 0 {
		t.Errorf("acme's chain %v lacks the consent or the refusals", kinds)
	}
	var created, consented map[string]any
	if err := f.log.Scan(ctx, acme, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		var m map[string]any
		if err := json.Unmarshal(r.Payload, &m); err != nil {
			return err
		}
		if m["key"] == op.ID && r.Kind == access.KindKeyCreated {
			created = m
		}
		if m["key"] == op.ID && r.Kind == access.KindKeyConsented {
			consented = m
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if created["pending_consent"] != "true" || consented["consented_by"] != bob.ID || consented["reason"] != why.Reason {
		t.Errorf("records: created %v, consented %v", created, consented)
	}
}

// TestConsentCannotBeLaundered: one person cannot supply the second admin
// with a key of their own making: a system admin key created over the API
// waits for consent wherever consent is asked (it manages every tenant's
// keys), and a consenting key created by the key's creator (directly or
// through keys it created) is refused even once it is enabled.
func TestConsentCannotBeLaundered(t *testing.T) {
	const def = `"default": {"A0": {"approvals": 0, "roles": ["operator", "admin"]}, "A1": {"approvals": 1, "roles": ["operator", "admin"]},
 "A2": {"approvals": 1, "roles": ["operator", "admin"]}, "A3": {"approvals": 2, "roles": ["operator", "admin"]}`
	for _, c := range []struct{ name, rules string }{
		{"tenant rule", `{` + def + `}, "tenants": {"acme": {"approver_key_consent": true}}}`},
		{"default rule", `{` + def + `, "approver_key_consent": true}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules, err := approval.ParseRules([]byte(c.rules))
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, func(cfg *access.Config) { cfg.Consent = rules })
			ctx := context.Background()
			_, alice := f.bootstrap(t, "alice", auth.RoleAdmin, []string{auth.SystemGrant}, []string{"*"})
			_, carol := f.bootstrap(t, "carol", auth.RoleAdmin, []string{auth.SystemGrant}, []string{"*"})
			_, puppet, err := f.svc.CreateKey(ctx, alice, auth.CreateRequest{Name: "bob", Role: auth.RoleAdmin, Tenants: []string{auth.SystemGrant}, Actions: []string{"*"}}, access.Meta{})
			if err != nil || !puppet.PendingConsent {
				t.Fatalf("a system admin key alice creates over the API: %+v %v, want pending consent", puppet, err)
			}
			// Even enabled by another person, alice's "bob" is alice's making.
			if _, err := f.svc.ConsentKey(ctx, carol, access.Consent{PrincipalID: puppet.ID, Reason: "bob is real"}, access.Meta{}); err != nil {
				t.Fatal(err)
			}
			bob, err := f.keys.Lookup(ctx, puppet.ID)
			if err != nil {
				t.Fatal(err)
			}
			_, op, err := f.svc.CreateKey(ctx, alice, auth.CreateRequest{Name: "alice-op", Role: auth.RoleAdmin, Tenants: []string{"acme"}, Actions: []string{"*"}}, access.Meta{})
			if err != nil || !op.PendingConsent {
				t.Fatalf("acme admin key: %+v %v", op, err)
			}
			if _, err := f.svc.ConsentKey(ctx, &bob, access.Consent{PrincipalID: op.ID, Reason: "second person"}, access.Meta{}); code(err) != contract.CodeSelfApproval {
				t.Fatalf("consent by a key alice created: %v, want self_approval", err)
			}
			if _, err := f.svc.ConsentKey(ctx, carol, access.Consent{PrincipalID: op.ID, Reason: "carol checked"}, access.Meta{}); err != nil {
				t.Fatalf("consent by carol: %v", err)
			}
		})
	}
}
