package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// replayExit runs `exoarmur replay` and returns its exit code and output.
func replayExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"replay"}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("replay %v: %v", args, err)
	return 0, ""
}

// exportVia streams a tenant's export through the API into a file.
func exportVia(t *testing.T, c *client.Client, tn, path string) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := c.AuditExport(t.Context(), tn, &buf); err != nil {
		t.Fatalf("export %s: %v", tn, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n"))
}

func writeLines(t *testing.T, path string, parts ...[][]byte) string {
	t.Helper()
	var out []byte
	for _, p := range parts {
		for _, l := range p {
			out = append(append(out, l...), '\n')
		}
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resealFrom re-hashes records into a valid chain: what an attacker holding
// an export file does after changing or dropping a record.
func resealFrom(t *testing.T, lines [][]byte) [][]byte {
	t.Helper()
	out := make([][]byte, len(lines))
	prev := contract.ZeroHash
	for i, line := range lines {
		var rec contract.AuditRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatal(err)
		}
		rec.Seq, rec.PrevHash, rec.PayloadHash = uint64(i+1), prev, contract.Hash(rec.Payload)
		b, err := rec.Seal()
		if err != nil {
			t.Fatal(err)
		}
		out[i], prev = b, rec.Hash
	}
	return out
}

// TestCheckpointsAgainstTampering: the attacks of issue 16 on a real
// export and a live stream. A serve process on a NATS process signs every
// 5 records and keeps a witness file outside its data dir. Each tampered
// export passes the plain replay (the hash chain alone: the attack that
// went undetected) and fails `replay --trusted-key`, naming what it
// found; a chain recreated through NATS with forged records fails the
// live verification, refuses a new checkpoint, and is caught again after
// a restart through the witness.
func TestCheckpointsAgainstTampering(t *testing.T) {
	url := startNATS(t)
	dataDir, dir := t.TempDir(), t.TempDir()
	witness := filepath.Join(dir, "witness.jsonl")
	agent, admin := createKeys(t, "--nats-url", url)
	betaKey := strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", "beta-agent", "--role", "agent", "--tenant", "beta", "--actions", "*"))
	betaOp := strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", "beta-op", "--role", "operator", "--tenant", "beta", "--actions", "*"))
	addr := freePort(t)
	flags := []string{"--nats-url", url, "--checkpoint-every", "5", "--checkpoint-witness", witness}
	srv := startServer(t, dataDir, addr, flags...)
	goLive(t, addr, admin)
	ctx := t.Context()
	for i := range 4 {
		v, _, err := srv.client(agent).Propose(ctx, "acme", contract.IntentRequest{
			Action: "fs.write", Target: fmt.Sprintf("cp/%d.txt", i), Params: map[string]string{"content": "x"}, IdempotencyKey: fmt.Sprint("cp-", i)})
		if err != nil {
			t.Fatal(err)
		}
		srv.approveVia(admin, "acme", v.Intent.ID)
		if _, err := srv.client(agent).Execute(ctx, "acme", v.Intent.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := srv.client(betaKey).Propose(ctx, "beta", contract.IntentRequest{Action: "fs.read", Target: "b.txt", IdempotencyKey: "b-1"}); err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(run(t, "audit", "pubkey", "--data-dir", dataDir))
	if !strings.HasPrefix(pub, "ed25519:") {
		t.Fatalf("audit pubkey printed %q", pub)
	}
	keys, err := newClient(t, addr, "").AuditKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].PublicKey != pub || !keys[0].Current {
		t.Fatalf("GET /v1/audit/keys = %+v %v, audit pubkey %s", keys, err, pub)
	}

	export := exportVia(t, srv.client(admin), "acme", filepath.Join(dir, "acme.jsonl"))
	records, cpLine := export[:len(export)-1], export[len(export)-1]
	if !contract.IsCheckpointLine(cpLine) || len(records) < 20 {
		t.Fatalf("the export does not end with a checkpoint: %d lines, last %s", len(export), cpLine)
	}
	beta := exportVia(t, srv.client(betaOp), "beta", filepath.Join(dir, "beta.jsonl"))
	if code, out := replayExit(t, "--from-export", filepath.Join(dir, "acme.jsonl"), "--tenant", "acme", "--trusted-key", pub); code != 0 {
		t.Fatalf("the intact export: exit %d\n%s", code, out)
	}

	rewritten := append([][]byte(nil), records...)
	for i, l := range rewritten {
		if bytes.Contains(l, []byte(`"kind":"approval.granted"`)) {
			rewritten[i] = bytes.Replace(l, []byte(`"reason":"e2e"`), []byte(`"reason":"forged"`), 1)
			break
		}
	}
	dropped := append(append([][]byte(nil), records[:3]...), records[4:]...)
	attacks := []struct {
		name, file, want string
	}{
		{"last record cut", writeLines(t, filepath.Join(dir, "cut.jsonl"), records[:len(records)-1], [][]byte{cpLine}), "truncated"},
		{"tail and checkpoint cut", writeLines(t, filepath.Join(dir, "cut2.jsonl"), records[:len(records)-3]), "covered by no signed checkpoint"},
		{"approval rewritten, chain re-hashed", writeLines(t, filepath.Join(dir, "rehash.jsonl"), resealFrom(t, rewritten), [][]byte{cpLine}), "rewritten or re-hashed"},
		{"record dropped, chain re-hashed", writeLines(t, filepath.Join(dir, "drop.jsonl"), resealFrom(t, dropped), [][]byte{cpLine}), "truncated"},
		{"beta spliced into acme", writeLines(t, filepath.Join(dir, "splice.jsonl"), records, [][]byte{cpLine}, beta), "mixed tenants"},
	}
	for _, a := range attacks {
		if code, out := replayExit(t, "--from-export", a.file, "--tenant", "acme"); code != 0 {
			t.Fatalf("%s: the plain replay already fails (exit %d), so it is no attack on the hash chain:\n%s", a.name, code, out)
		}
		code, out := replayExit(t, "--from-export", a.file, "--tenant", "acme", "--trusted-key", pub)
		if code != 1 || !strings.Contains(out, a.want) {
			t.Fatalf("%s: replay --trusted-key exit %d, want 1 naming %q:\n%s", a.name, code, a.want, out)
		}
	}

	// Cut back to an earlier signed record, with its checkpoint: only the
	// witness's later checkpoint shows it.
	wcps := readCheckpoints(t, witness, "acme")
	if len(wcps) < 2 {
		t.Fatalf("the witness holds %d checkpoints of acme, want several (every 5 records)", len(wcps))
	}
	early := wcps[0]
	earlyLine, _ := contract.Canonical(early)
	short := writeLines(t, filepath.Join(dir, "short.jsonl"), records[:early.Seq], [][]byte{earlyLine})
	if code, out := replayExit(t, "--from-export", short, "--tenant", "acme", "--trusted-key", pub); code != 0 {
		t.Fatalf("the export cut at a signed record, alone: exit %d\n%s", code, out)
	}
	if code, out := replayExit(t, "--from-export", short, "--tenant", "acme", "--trusted-key", pub, "--checkpoint", witness); code != 1 || !strings.Contains(out, "before record") {
		t.Fatalf("the same with the witness: exit %d\n%s", code, out)
	}
	stored := run(t, "audit", "checkpoint", "--nats-url", url, "--tenant", "acme")
	if cp, err := contract.DecodeCheckpoint([]byte(strings.TrimSpace(stored))); err != nil || cp.Tenant != "acme" {
		t.Fatalf("audit checkpoint printed %q: %v", stored, err)
	}

	// The live stream: deleted and recreated through NATS with a forged chain.
	forgeChain(t, url, len(records))
	rep, err := srv.client(admin).AuditVerify(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pass || !mismatchSays(rep, "rewritten or recreated", "before record") {
		t.Fatalf("live verification of the recreated chain: pass=%t %+v", rep.Pass, rep.Mismatches)
	}
	if _, err := srv.client(admin).SignCheckpoint(ctx, "acme"); refusal(err).Code != contract.CodeConflict {
		t.Fatalf("signing the forged chain = %v, want 409 conflict", err)
	}
	// The log line was written before the answer; its copy from the
	// child's pipe may come a little after.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(srv.logs.String(), "AUDIT CHAIN TAMPERING"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not log the tampering:\n%s", srv.logs.String())
		}
	}
	// The node stops governing acme: nothing runs on a chain that was
	// tampered with, as if the tenant's switch were engaged.
	v, _, err := srv.client(agent).Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "cp/0.txt", IdempotencyKey: "after-forgery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.client(agent).Execute(ctx, "acme", v.Intent.ID); refusal(err).Code != contract.CodeBlocked || !strings.Contains(err.Error(), "audit_chain_diverged") {
		t.Fatalf("an execution on the diverged chain = %v, want 403 blocked audit_chain_diverged", err)
	}
	// A restart forgets what the node signed, and the store's checkpoints
	// went with the stream: the witness still knows.
	srv.kill()
	srv = startServer(t, dataDir, addr, flags...)
	rep, err = srv.client(admin).AuditVerify(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pass || !mismatchSays(rep, "rewritten or recreated", "before record") {
		t.Fatalf("live verification after a restart, with the witness: pass=%t %+v", rep.Pass, rep.Mismatches)
	}
	// And the restarted node finds it by itself: it reads the chain
	// against the witness's checkpoint when it starts.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(srv.logs.String(), "AUDIT CHAIN TAMPERING"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node did not find the forged chain:\n%s", srv.logs.String())
		}
	}
}

func mismatchSays(rep contract.ReplayReport, any ...string) bool {
	for _, m := range rep.Mismatches {
		for _, s := range any {
			if strings.Contains(m.Reason, s) {
				return true
			}
		}
	}
	return false
}

func readCheckpoints(t *testing.T, path, tn string) []contract.Checkpoint {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []contract.Checkpoint
	for _, l := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		cp, err := contract.DecodeCheckpoint(l)
		if err != nil {
			t.Fatalf("witness line %q: %v", l, err)
		}
		if cp.Tenant == tn {
			out = append(out, cp)
		}
	}
	return out
}

// forgeChain is the attacker with write access to NATS: it deletes the
// audit stream and the checkpoints, lets ExoArmur's own declarations
// recreate them, and writes n records of acme with valid hashes and a
// forged approver.
func forgeChain(t *testing.T, url string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := natsstore.Open(ctx, natsstore.Config{NATSURL: url, Name: "attacker"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tenant.AuditStream, tenant.KVStream(tenant.CheckpointsBucket)} {
		if err := st.JS.DeleteStream(ctx, name); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	st.Close()
	if st, err = natsstore.Open(ctx, natsstore.Config{NATSURL: url, Name: "attacker"}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := audit.New(st.Audit)
	for i := range n {
		if _, err := log.Append(ctx, tenant.MustParse("acme"), audit.Entry{Kind: "approval.granted", Actor: "key_mallory", Time: time.Now(),
			Payload: map[string]any{"approver": "key_mallory", "i": i}}); err != nil {
			t.Fatal(err)
		}
	}
}
