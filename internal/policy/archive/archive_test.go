package archive_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/archive"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

func openArchive(t *testing.T) (*archive.Archive, *natsstore.Store) {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return archive.New(st.Policies), st
}

// another is a bundle this binary did not ship: the default with one more
// line, so another hash and the same verdicts.
func another(t *testing.T) *policy.Bundle {
	t.Helper()
	b, err := policy.Compile("tomorrow.cedar", append(policy.Default().Source(), "\n// tomorrow's default\n"...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Builtin().Lookup(b.Hash()); err == nil {
		t.Fatal("the test bundle is one this binary shipped")
	}
	return b
}

// TestArchiveKeepsBundlesByHash: a bundle is stored once under its hash on
// real JetStream; storing it again is a no-op; what comes back compiles to
// the same hash; an unknown hash is kv.ErrNotFound.
func TestArchiveKeepsBundlesByHash(t *testing.T) {
	a, _ := openArchive(t)
	ctx := context.Background()
	b := another(t)
	for range 2 {
		if err := a.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Get(ctx, b.Hash())
	if err != nil || got.Hash() != b.Hash() || !bytes.Equal(got.Source(), b.Source()) {
		t.Fatalf("get: %v %v", got, err)
	}
	if _, err := a.Get(ctx, policy.Default().Hash()); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a bundle never stored: %v, want kv.ErrNotFound", err)
	}
	if _, err := a.Get(ctx, "../x"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a key that is no hash: %v", err)
	}
	lib, err := a.Library(ctx, policy.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range append(policy.Builtin().Hashes(), b.Hash()) {
		if _, err := lib.Lookup(h); err != nil {
			t.Errorf("library lacks %s: %v", h, err)
		}
	}
}

// TestArchiveRefusesForgery: a source stored under a hash it does not have
// (written to the bucket directly, as a node confined to another tenant
// could) is refused by Get, by Library and by a Put of the real bundle.
func TestArchiveRefusesForgery(t *testing.T) {
	a, st := openArchive(t)
	ctx := context.Background()
	b := another(t)
	forged := bytes.ReplaceAll(b.Source(), []byte("permit"), []byte("forbid"))
	if _, err := st.Policies.Put(ctx, b.Hash(), forged, kv.PutOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, b.Hash()); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("get of a forged bundle: %v, want ErrCorrupt", err)
	}
	if _, err := a.Library(ctx, policy.Builtin()); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("library with a forged bundle: %v, want ErrCorrupt", err)
	}
	if err := a.Put(ctx, b); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("put over a forged bundle: %v, want ErrCorrupt", err)
	}
}

// TestReplayFindsAnArchivedBundle: a decision recorded under a bundle this
// binary never shipped replays with the archive's library, and fails
// (naming the unknown policy) with the shipped bundles alone.
func TestReplayFindsAnArchivedBundle(t *testing.T) {
	a, st := openArchive(t)
	ctx := context.Background()
	b := another(t)
	if err := a.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	log := audit.New(st.Audit)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := contract.ActionIntent{SchemaVersion: "v1", ID: "in_1", Tenant: "acme", Action: "fs.read", Class: "A0", Target: "a.txt", IdempotencyKey: "k", Proposer: "p", CreatedAt: t0}
	in.Hash, _ = in.ComputeHash()
	open := func(scope string) killswitch.Reading {
		return killswitch.Reading{Scope: scope, Revision: 1, Actor: "admin", Reason: "go", Fresh: true}
	}
	input := gate.Input{Global: open("global"), TenantSwitch: open("acme"), Tenant: "acme", Intent: in, PolicyHash: b.Hash(), Time: t0, Allowlist: []string{},
		Principal: auth.Principal{ID: "p", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"*"}}}
	d := gate.Decide(input, b, action.Builtin())
	if d.Verdict != contract.Allow {
		t.Fatalf("decision under tomorrow's bundle: %+v", d)
	}
	acme := tenant.MustParse("acme")
	if _, err := log.Append(ctx, acme, audit.Entry{Kind: audit.KindGateAllowed, CorrelationID: in.ID, Actor: "p", Time: t0, Payload: gate.DecisionPayload{Input: input, Decision: d}}); err != nil {
		t.Fatal(err)
	}
	lib, err := a.Library(ctx, policy.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		bundles replay.Bundles
		pass    bool
	}{{"with the archive", lib, true}, {"with the shipped bundles", policy.Builtin(), false}} {
		rp := replay.NewWith("acme", c.bundles, action.Builtin())
		if err := log.Scan(ctx, acme, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
			t.Fatal(err)
		}
		if rep := rp.Report(); rep.Pass != c.pass {
			t.Errorf("replay %s: pass=%v, want %v (%+v)", c.name, rep.Pass, c.pass, rep.Mismatches)
		}
	}
}
