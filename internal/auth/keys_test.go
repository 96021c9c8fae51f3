package auth_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

func newKeys(t *testing.T, now func() time.Time) (*auth.Keys, *natsstore.Store) {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return auth.NewKeys(st.Principals, rand.Reader, now), st
}

func TestCreateAndAuthenticate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k, st := newKeys(t, func() time.Time { return now })
	ctx := context.Background()
	key, p, err := k.Create(ctx, auth.CreateRequest{Name: "bot", Role: auth.RoleAgent, Tenants: []string{"b", "a", "a"}, Actions: []string{"fs.read", "A1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, auth.KeyPrefix) || len(key) < 4+16+1+43 {
		t.Fatalf("key %q", key)
	}
	if strings.Join(p.Tenants, ",") != "a,b" {
		t.Fatalf("tenants %v not sorted and deduplicated", p.Tenants)
	}
	got, err := k.Authenticate(ctx, key)
	if err != nil || got.ID != p.ID || got.Name != "bot" {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	if !got.MayUse("fs.read", "A0") || !got.MayUse("fs.write", "A1") || got.MayUse("fs.delete", "A3") {
		t.Fatal("grants")
	}
	// The registry holds no secret.
	id := strings.Split(strings.TrimPrefix(key, auth.KeyPrefix), "_")[0]
	secret := key[len(auth.KeyPrefix)+len(id)+1:]
	e, err := st.Principals.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value), secret) {
		t.Fatal("the stored record contains the secret")
	}
	var rec map[string]any
	_ = json.Unmarshal(e.Value, &rec)
	if rec["secret_hash"] == nil {
		t.Fatal("no secret hash stored")
	}
	last := "A"
	if key[len(key)-1] == 'A' {
		last = "B"
	}
	for _, bad := range []string{"", "exo_", key + "x", key[:len(key)-1] + last, strings.Replace(key, id, "0000000000000000", 1), "Bearer " + key, strings.ToUpper(key)} {
		if _, err := k.Authenticate(ctx, bad); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) = %v, want ErrUnauthenticated", bad, err)
		}
	}
	// Malformed keys and unregistered ids are ErrUnknownKey (counted per
	// source by the access layer); a wrong secret of a registered id is not.
	for _, bad := range []string{"", "exo_", key + "x", strings.Replace(key, id, "0000000000000000", 1)} {
		if _, err := k.Authenticate(ctx, bad); !errors.Is(err, auth.ErrUnknownKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrUnknownKey", bad, err)
		}
	}
	if _, err := k.Authenticate(ctx, key[:len(key)-1]+last); err == nil || errors.Is(err, auth.ErrUnknownKey) {
		t.Errorf("a wrong secret of a registered id = %v, want ErrUnauthenticated but not ErrUnknownKey", err)
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := now
	k, _ := newKeys(t, func() time.Time { return clock })
	key, _, err := k.Create(context.Background(), auth.CreateRequest{Name: "tmp", Role: auth.RoleAgent, Tenants: []string{"a"}, Actions: []string{"*"}, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Authenticate(context.Background(), key); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clock = now.Add(time.Hour)
	if _, err := k.Authenticate(context.Background(), key); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("after expiry: %v, want ErrExpired", err)
	}
}

func TestCreateValidation(t *testing.T) {
	k, _ := newKeys(t, time.Now)
	tests := []struct {
		req   auth.CreateRequest
		field string
	}{
		{auth.CreateRequest{Role: "agent", Tenants: []string{"a"}, Actions: []string{"*"}}, "name"},
		{auth.CreateRequest{Name: "n", Role: "root", Tenants: []string{"a"}, Actions: []string{"*"}}, "role"},
		{auth.CreateRequest{Name: "n", Role: "agent", Actions: []string{"*"}}, "tenant"},
		{auth.CreateRequest{Name: "n", Role: "agent", Tenants: []string{"A.B"}, Actions: []string{"*"}}, "tenant"},
		{auth.CreateRequest{Name: "n", Role: "agent", Tenants: []string{"a"}}, "actions"},
		{auth.CreateRequest{Name: "n", Role: "agent", Tenants: []string{"a"}, Actions: []string{"shell.exec"}}, "actions"},
	}
	for _, tt := range tests {
		if _, _, err := k.Create(context.Background(), tt.req); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("Create(%+v) = %v, want an error naming %s", tt.req, err, tt.field)
		}
	}
}

func TestListRevokeAndCertPrincipals(t *testing.T) {
	k, st := newKeys(t, time.Now)
	ctx := context.Background()
	key, p, err := k.Create(ctx, auth.CreateRequest{Name: "bot", Role: auth.RoleAgent, Tenants: []string{"a"}, Actions: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := k.CreateCert(ctx, "alice.example", auth.CreateRequest{Name: "alice", Role: auth.RoleOperator, Tenants: []string{"a"}, Actions: []string{"A0"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.AuthenticateCert(ctx, "alice.example"); err != nil || got.ID != cp.ID || got.Role != auth.RoleOperator {
		t.Fatalf("AuthenticateCert = %+v, %v", got, err)
	}
	if _, err := k.AuthenticateCert(ctx, "mallory"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("unknown CN: %v", err)
	}
	list, err := k.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), strings.SplitN(key, "_", 3)[2]) || strings.Contains(string(raw), "secret") {
		t.Fatal("the listing shows a secret or its hash")
	}
	if _, err := k.Revoke(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Authenticate(ctx, key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked key authenticates: %v", err)
	}
	if _, err := k.Principal(ctx, p.ID); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked principal resolves for the worker: %v", err)
	}
	if _, err := k.Revoke(ctx, cp.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.AuthenticateCert(ctx, "alice.example"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked cert principal authenticates: %v", err)
	}
	if _, err := k.Revoke(ctx, "key_ffffffffffffffff"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoke unknown: %v", err)
	}
	_ = st
	if got := auth.KeyID(key); got != p.ID {
		t.Fatalf("KeyID = %q, want %q", got, p.ID)
	}
	if auth.KeyID("garbage") != "" {
		t.Fatal("KeyID of garbage")
	}
}

// TestPrincipalOfEveryKind: the worker resolves a proposer's current grants
// by principal ID, for API keys and client-certificate principals alike
// (cert principals' queued intents were blocked as unknown); a revoked one
// is ErrUnauthenticated.
func TestPrincipalOfEveryKind(t *testing.T) {
	k, _ := newKeys(t, time.Now)
	ctx := context.Background()
	cp, err := k.CreateCert(ctx, "bot.example", auth.CreateRequest{Name: "bot", Role: auth.RoleAgent, Tenants: []string{"a"}, Actions: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	_, kp, err := k.Create(ctx, auth.CreateRequest{Name: "bot2", Role: auth.RoleAgent, Tenants: []string{"a"}, Actions: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{cp.ID, kp.ID} {
		if p, err := k.Principal(ctx, id); err != nil || p.ID != id {
			t.Errorf("Principal(%s) = %+v, %v", id, p, err)
		}
		if _, err := k.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Principal(ctx, id); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("Principal(%s) after revocation = %v", id, err)
		}
	}
}
