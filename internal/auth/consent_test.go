package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
)

// TestPendingKeyWaitsForConsent: a key created pending consent is refused
// by every way in (its secret, its principal ID for the worker and the
// gate) until Consent; a consent to a key awaiting none, or revoked, is an
// error and changes nothing.
func TestPendingKeyWaitsForConsent(t *testing.T) {
	k, _ := newKeys(t, time.Now)
	ctx := context.Background()
	key, p, err := k.Create(ctx, auth.CreateRequest{Name: "carol", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}, PendingConsent: true, CreatedBy: "key_alice"})
	if err != nil || !p.PendingConsent {
		t.Fatalf("create: %+v %v", p, err)
	}
	if _, err := k.Authenticate(ctx, key); !errors.Is(err, auth.ErrPendingConsent) || !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("authenticate a pending key: %v, want ErrPendingConsent (an ErrUnauthenticated)", err)
	}
	if _, err := k.Principal(ctx, p.ID); !errors.Is(err, auth.ErrPendingConsent) {
		t.Fatalf("principal of a pending key: %v", err)
	}
	got, err := k.Consent(ctx, p.ID, "key_bob")
	if err != nil || got.PendingConsent || got.ConsentedBy != "key_bob" {
		t.Fatalf("consent: %+v %v", got, err)
	}
	if a, err := k.Authenticate(ctx, key); err != nil || a.ConsentedBy != "key_bob" {
		t.Fatalf("authenticate after consent: %+v %v", a, err)
	}
	if _, err := k.Consent(ctx, p.ID, "key_dave"); !errors.Is(err, auth.ErrNotPending) {
		t.Fatalf("a second consent: %v, want ErrNotPending", err)
	}
	_, q, err := k.Create(ctx, auth.CreateRequest{Name: "erin", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}, PendingConsent: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Revoke(ctx, q.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Consent(ctx, q.ID, "key_bob"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("consent to a revoked key: %v, want ErrUnauthenticated", err)
	}
	if l, err := k.Lookup(ctx, q.ID); err != nil || !l.Revoked || !l.PendingConsent {
		t.Fatalf("the revoked key after a refused consent: %+v %v", l, err)
	}
}
