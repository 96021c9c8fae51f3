package checkpoint_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func seeded(n byte) *rand.ChaCha8 { return rand.NewChaCha8([32]byte{n}) }

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "audit-key.json")
	if _, err := checkpoint.Load(path); !errors.Is(err, checkpoint.ErrNoKey) {
		t.Fatalf("load of a missing file = %v, want ErrNoKey", err)
	}
	k, created, err := checkpoint.LoadOrCreate(path, seeded(1), t0)
	if err != nil || !created {
		t.Fatalf("create = %v, %t", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	again, created, err := checkpoint.LoadOrCreate(path, seeded(2), t0)
	if err != nil || created || again.Signer().ID != k.Signer().ID {
		t.Fatalf("second start = %v, created %t, key %s (was %s)", err, created, again.Signer().ID, k.Signer().ID)
	}
	cp, err := k.Signer().Sign("acme", 3, strings.Repeat("a", 64), t0)
	if err != nil {
		t.Fatal(err)
	}
	old, cur, err := again.Rotate(seeded(3), t0.Add(time.Hour))
	if err != nil || old.KeyID != k.Signer().ID || cur.KeyID == old.KeyID || !cur.Current {
		t.Fatalf("rotate = %+v %+v %v", old, cur, err)
	}
	rotated, err := checkpoint.Load(path)
	if err != nil || rotated.Signer().ID != cur.KeyID || len(rotated.Keys()) != 2 {
		t.Fatalf("after rotation: %v, current %s, %d keys", err, rotated.Signer().ID, len(rotated.Keys()))
	}
	if err := rotated.Trust().Verify(cp); err != nil {
		t.Fatalf("a checkpoint of the retired key no longer verifies: %v", err)
	}

	// Refused: readable by others, altered, not a key file.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key file readable by others = %v", err)
	}
	raw, _ := os.ReadFile(path)
	bad := filepath.Join(dir, "bad.json")
	swapped := strings.Replace(string(raw), cur.KeyID, old.KeyID, 1)
	if err := os.WriteFile(bad, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Load(bad); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("a key whose id was changed = %v", err)
	}
	if err := os.WriteFile(bad, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Load(bad); err == nil {
		t.Fatal("an empty object loaded as a key file")
	}
}

// node is a checkpointer on a real store.
type node struct {
	st  *natsstore.Store
	log *audit.Log
	cps *checkpoint.Checkpointer
	dir string
}

// openNode runs a NATS server with a client port (so that an attacker
// can connect to it too) and a checkpointer on it.
func openNode(tb testing.TB, dir string, every int) *node {
	tb.Helper()
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: filepath.Join(dir, "nats"), Host: "127.0.0.1"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	st, err := natsstore.Open(context.Background(), natsstore.Config{NATSURL: srv.ClientURL()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	keys, _, err := checkpoint.LoadOrCreate(filepath.Join(dir, "audit-key.json"), seeded(7), t0)
	if err != nil {
		tb.Fatal(err)
	}
	log := audit.New(st.Audit)
	cps := checkpoint.New(checkpoint.Config{Audit: log, Keys: keys, Store: checkpoint.NewStore(st.Checkpoints), Every: every, Now: func() time.Time { return t0 }, Node: "n1"})
	log.OnAppend(cps.Appended)
	if err := cps.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return &node{st: st, log: log, cps: cps, dir: dir}
}

func (n *node) append(tb testing.TB, t tenant.ID, count int, actor string) {
	tb.Helper()
	for i := range count {
		if _, err := n.log.Append(context.Background(), t, audit.Entry{Kind: "test.record", Actor: actor, Time: t0, Payload: map[string]int{"i": i}}); err != nil {
			tb.Fatal(err)
		}
	}
}

// verify is the live verification /audit/verify makes.
func (n *node) verify(tb testing.TB, t tenant.ID) contract.ReplayReport {
	tb.Helper()
	anchors, err := n.cps.Anchors(context.Background(), t)
	if err != nil {
		tb.Fatal(err)
	}
	rp := replay.New(t.String())
	rp.Anchor(n.cps.Trust(), false, false)
	rp.Require(anchors...)
	if err := n.log.Scan(context.Background(), t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
		tb.Fatal(err)
	}
	return rp.Report()
}

func TestSignExtendsAndStores(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir(), 0)
	acme := tenant.MustParse("acme")
	if _, err := n.cps.Sign(ctx, acme); !errors.Is(err, checkpoint.ErrEmpty) {
		t.Fatalf("sign of an empty chain = %v", err)
	}
	n.append(t, acme, 5, "a")
	cp, err := n.cps.Sign(ctx, acme)
	if err != nil || cp.Seq != 5 || n.cps.Trust().Verify(cp) != nil {
		t.Fatalf("sign = %+v %v", cp, err)
	}
	n.append(t, acme, 3, "a")
	cp2, err := n.cps.Sign(ctx, acme)
	if err != nil || cp2.Seq != 8 {
		t.Fatalf("second sign = %+v %v", cp2, err)
	}
	same, err := n.cps.Sign(ctx, acme)
	if err != nil || same != cp2 {
		t.Fatalf("a chain that did not grow signs nothing new: %+v %v", same, err)
	}
	stored, ok, err := n.cps.Latest(ctx, acme)
	if err != nil || !ok || stored != cp2 {
		t.Fatalf("stored = %+v %t %v", stored, ok, err)
	}
	if rep := n.verify(t, acme); !rep.Pass {
		t.Fatalf("live verification: %+v", rep.Mismatches)
	}
	// An export's checkpoint: the last one, when the chain ends there; a
	// new one of the export's last record after records were added.
	for _, want := range []uint64{8, 10} {
		if want == 10 {
			n.append(t, acme, 2, "a")
		}
		check := n.cps.Check(acme)
		if err := n.log.ScanHeads(ctx, acme, 0, 0, func(raw []byte, rec contract.AuditRecord) error { check.Next(raw, rec); return nil }); err != nil {
			t.Fatal(err)
		}
		if cp, err := check.Vouch(ctx); err != nil || cp.Seq != want || n.cps.Trust().Verify(cp) != nil {
			t.Fatalf("export checkpoint = %+v %v, want one of record %d", cp, err, want)
		}
	}
	// The key is announced once, in the system chain.
	var announced int
	if err := n.log.Scan(ctx, tenant.System, 0, 0, func(_ []byte, rec contract.AuditRecord) error {
		if rec.Kind == checkpoint.KindKeyAnnounced {
			announced++
		}
		return nil
	}); err != nil || announced != 1 {
		t.Fatalf("key announcements = %d, %v", announced, err)
	}
}

// TestEveryTriggersASignature: the count trigger signs without a call
// (bounded wait, no timing assertion).
func TestEveryTriggersASignature(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := openNode(t, t.TempDir(), 10)
	go n.cps.Run(ctx)
	acme := tenant.MustParse("acme")
	n.append(t, acme, 10, "a")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if cp, ok, err := n.cps.Latest(ctx, acme); err == nil && ok && cp.Seq == 10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("10 appends with --checkpoint-every 10: no checkpoint of record 10 within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRecreatedStreamIsCaught: someone with write access to NATS deletes
// the audit stream and writes a forged chain in its place (valid hashes,
// different approver); the node's next checkpoint refuses to sign it, and
// the live verification names the checkpoint it no longer contains. The
// checkpoints bucket is deleted too: the node's memory of its last
// checkpoint is what catches it (and a witness after a restart).
func TestRecreatedStreamIsCaught(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openNode(t, dir, 0)
	acme := tenant.MustParse("acme")
	n.append(t, acme, 6, "alice")
	if _, err := n.cps.Sign(ctx, acme); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tenant.AuditStream, tenant.KVStream(tenant.CheckpointsBucket)} {
		if err := n.st.JS.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// The attacker's connection: the streams recreated as ExoArmur
	// declares them, and a chain of valid hashes written in.
	forger, err := natsstore.Open(ctx, natsstore.Config{NATSURL: n.st.NC.ConnectedUrl()})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	forged := audit.New(forger.Audit)
	for i := range 9 {
		if _, err := forged.Append(ctx, acme, audit.Entry{Kind: "test.record", Actor: "mallory", Time: t0, Payload: map[string]int{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	// An export of the forged chain gets no checkpoint.
	check := n.cps.Check(acme)
	if err := n.log.ScanHeads(ctx, acme, 0, 0, func(raw []byte, rec contract.AuditRecord) error { check.Next(raw, rec); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := check.Vouch(ctx); !errors.Is(err, checkpoint.ErrDiverged) {
		t.Fatalf("vouching for an export of the forged chain = %v, want ErrDiverged", err)
	}
	if _, err := n.cps.Sign(ctx, acme); !errors.Is(err, checkpoint.ErrDiverged) {
		t.Fatalf("sign over the forged chain = %v, want ErrDiverged", err)
	}
	rep := n.verify(t, acme)
	if rep.Pass || !strings.Contains(rep.Mismatches[0].Reason, "rewritten or recreated") {
		t.Fatalf("live verification of the forged chain: pass=%t %+v", rep.Pass, rep.Mismatches)
	}
}

// TestAnotherWritersRecordsAreRead: records this node appended are known
// without a read; a record another node appended in between is read and
// verified, and the checkpoint covers the store's chain either way.
func TestAnotherWritersRecordsAreRead(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir(), 0)
	acme := tenant.MustParse("acme")
	other := audit.New(n.st.Audit) // a second node's log on the same store
	n.append(t, acme, 3, "a")
	if _, err := other.Append(ctx, acme, audit.Entry{Kind: "test.record", Actor: "b", Time: t0, Payload: map[string]int{"i": 1}}); err != nil {
		t.Fatal(err)
	}
	n.append(t, acme, 2, "a") // reloads the head: seq 5 and 6
	cp, err := n.cps.Sign(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	seq, hash, err := n.log.Head(ctx, acme)
	if err != nil || cp.Seq != seq || cp.RecordHash != hash {
		t.Fatalf("checkpoint %d:%s, the store's head %d:%s (%v)", cp.Seq, cp.RecordHash, seq, hash, err)
	}
	n.append(t, acme, 4, "a")
	cp, err = n.cps.Sign(ctx, acme)
	if seq, hash, _ := n.log.Head(ctx, acme); err != nil || cp.Seq != seq || cp.RecordHash != hash {
		t.Fatalf("second checkpoint %d:%s, head %d:%s (%v)", cp.Seq, cp.RecordHash, seq, hash, err)
	}
	if rep := n.verify(t, acme); !rep.Pass {
		t.Fatalf("live verification: %+v", rep.Mismatches)
	}
}
