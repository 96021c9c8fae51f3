package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
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
func another(t *testing.T) *policy.Bundle { return anotherNamed(t, "tomorrow") }

// anotherNamed is another with its own line, so each name its own hash.
func anotherNamed(t *testing.T, name string) *policy.Bundle {
	t.Helper()
	b, err := policy.Compile(name+".cedar", append(policy.Default().Source(), "\n// "+name+"'s default\n"...))
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
// (written to the bucket directly before the real bundle, as any node
// could) is refused by Get, left out of the Library (a Lookup of it is
// ErrCorrupt naming the hash), and refused by a Put of the real bundle.
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
	lib, err := a.Library(ctx, policy.Builtin())
	if err != nil {
		t.Fatalf("library with a forged bundle: %v", err)
	}
	if _, err := lib.Lookup(b.Hash()); !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), b.Hash()) {
		t.Fatalf("lookup of a forged bundle: %v, want ErrCorrupt naming it", err)
	}
	if err := a.Put(ctx, b); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("put over a forged bundle: %v, want ErrCorrupt", err)
	}
}

// TestLibraryLeavesOutCorruptEntries: a junk key and a forged entry in the
// archive (each written to the bucket directly, as any node could) do not
// fail the library: it leaves them out and names them (Corrupt), a Lookup
// of either is ErrCorrupt, and a replay of the live chain verifies every
// decision but the one recorded under the forged hash, whose mismatch
// names the hash.
func TestLibraryLeavesOutCorruptEntries(t *testing.T) {
	a, st := openArchive(t)
	ctx := context.Background()
	good, forgedUnder := anotherNamed(t, "good"), anotherNamed(t, "forged")
	if err := a.Put(ctx, good); err != nil {
		t.Fatal(err)
	}
	forged := bytes.ReplaceAll(forgedUnder.Source(), []byte("permit"), []byte("forbid"))
	if _, err := st.Policies.Put(ctx, forgedUnder.Hash(), forged, kv.PutOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Policies.Put(ctx, "not-a-hash", []byte("junk"), kv.PutOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	log := audit.New(st.Audit)
	acme := tenant.MustParse("acme")
	for i, b := range []*policy.Bundle{policy.Default(), good, forgedUnder} {
		recordAllowed(t, log, acme, fmt.Sprintf("in_%d", i), b)
	}

	lib, err := a.Library(ctx, policy.Builtin())
	if err != nil {
		t.Fatalf("library with a junk key and a forged entry: %v", err)
	}
	bad := lib.Corrupt()
	if len(bad) != 2 || !strings.Contains(bad[0].Error(), forgedUnder.Hash()) || !strings.Contains(bad[1].Error(), "not-a-hash") {
		t.Fatalf("corrupt entries: %v; want the forged hash and the junk key", bad)
	}
	for _, key := range []string{forgedUnder.Hash(), "not-a-hash"} {
		if _, err := lib.Lookup(key); !errors.Is(err, archive.ErrCorrupt) {
			t.Errorf("lookup of %s: %v, want ErrCorrupt", key, err)
		}
	}
	for _, b := range []*policy.Bundle{policy.Default(), good} {
		if _, err := lib.Lookup(b.Hash()); err != nil {
			t.Errorf("lookup of %s: %v", b.Name(), err)
		}
	}

	rp := replay.NewWith("acme", lib, action.Builtin())
	if err := log.Scan(ctx, acme, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
		t.Fatal(err)
	}
	rep := rp.Report()
	if rep.Decisions != 3 || rep.DecisionsMatched != 2 || len(rep.Mismatches) != 1 || rep.Mismatches[0].Seq != 3 ||
		!strings.Contains(rep.Mismatches[0].Reason, forgedUnder.Hash()) {
		t.Fatalf("replay: %d of %d decisions matched, mismatches %+v; want all but the one under the forged hash, naming it", rep.DecisionsMatched, rep.Decisions, rep.Mismatches)
	}
}

// recordAllowed appends to t's chain the allowed decision on intent id
// under bundle b.
func recordAllowed(t *testing.T, log *audit.Log, tn tenant.ID, id string, b *policy.Bundle) {
	t.Helper()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := contract.ActionIntent{SchemaVersion: "v1", ID: id, Tenant: tn.String(), Action: "fs.read", Class: "A0", Target: "a.txt", IdempotencyKey: "k-" + id, Proposer: "p", CreatedAt: t0}
	in.Hash, _ = in.ComputeHash()
	open := func(scope string) killswitch.Reading {
		return killswitch.Reading{Scope: scope, Revision: 1, Actor: "admin", Reason: "go", Fresh: true}
	}
	input := gate.Input{Global: open("global"), TenantSwitch: open(tn.String()), Tenant: tn.String(), Intent: in, PolicyHash: b.Hash(), Time: t0, Allowlist: []string{},
		Principal: auth.Principal{ID: "p", Role: "agent", Tenants: []string{tn.String()}, Actions: []string{"*"}}}
	d := gate.Decide(input, b, action.Builtin())
	if d.Verdict != contract.Allow {
		t.Fatalf("decision under %s: %+v", b.Name(), d)
	}
	if _, err := log.Append(context.Background(), tn, audit.Entry{Kind: audit.KindGateAllowed, CorrelationID: in.ID, Actor: "p", Time: t0, Payload: gate.DecisionPayload{Input: input, Decision: d}}); err != nil {
		t.Fatal(err)
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
	acme := tenant.MustParse("acme")
	recordAllowed(t, log, acme, "in_1", b)
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
