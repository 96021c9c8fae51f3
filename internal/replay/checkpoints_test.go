package replay_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
)

// signer is the test's audit key (a fixed seed: tests only).
func signer(seed byte) audit.Signer {
	return audit.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
}

// tenantLines splits an export into each tenant's record lines.
func tenantLines(tb testing.TB, export []byte) map[string][][]byte {
	tb.Helper()
	out := map[string][][]byte{}
	for _, line := range bytes.Split(bytes.TrimSuffix(export, []byte("\n")), []byte("\n")) {
		var h struct {
			Tenant string `json:"tenant"`
		}
		if err := json.Unmarshal(line, &h); err != nil {
			tb.Fatal(err)
		}
		out[h.Tenant] = append(out[h.Tenant], line)
	}
	return out
}

// checkpointOf signs the last of lines.
func checkpointOf(tb testing.TB, s audit.Signer, lines [][]byte) []byte {
	tb.Helper()
	var rec contract.AuditRecord
	if err := json.Unmarshal(lines[len(lines)-1], &rec); err != nil {
		tb.Fatal(err)
	}
	cp, err := s.Sign(rec.Tenant, rec.Seq, rec.Hash, t0)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := contract.Canonical(cp)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// reseal re-hashes lines into a valid chain from the first: what an
// attacker holding the export file does after changing or dropping a
// record.
func reseal(tb testing.TB, lines [][]byte) [][]byte {
	tb.Helper()
	out := make([][]byte, len(lines))
	prev := contract.ZeroHash
	for i, line := range lines {
		var rec contract.AuditRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			tb.Fatal(err)
		}
		rec.Seq, rec.PrevHash = uint64(i+1), prev
		rec.PayloadHash = contract.Hash(rec.Payload)
		b, err := rec.Seal()
		if err != nil {
			tb.Fatal(err)
		}
		out[i], prev = b, rec.Hash
	}
	return out
}

func join(parts ...[][]byte) []byte {
	var out []byte
	for _, p := range parts {
		for _, l := range p {
			out = append(append(out, l...), '\n')
		}
	}
	return out
}

func one(b []byte) [][]byte { return [][]byte{b} }

// requireVerdict replays export as an export claimed for only, trusting
// trust and requiring required: it must pass when want is "", else fail
// with want in its first mismatch.
func requireVerdict(tb testing.TB, export []byte, only string, trust audit.Trust, required []contract.Checkpoint, want string) {
	tb.Helper()
	rp := replay.New(only)
	rp.Anchor(trust, true, true)
	rp.Require(required...)
	if err := rp.ReadJSONL(bytes.NewReader(export)); err != nil {
		tb.Fatal(err)
	}
	rep := rp.Report()
	if want == "" {
		if !rep.Pass {
			tb.Fatalf("refused: %+v", rep.Mismatches)
		}
		return
	}
	if rep.Pass || !strings.Contains(rep.Mismatches[0].Reason, want) {
		tb.Fatalf("pass=%t, mismatches %+v; want the first to say %q", rep.Pass, rep.Mismatches, want)
	}
}

// TestCheckpointsCatchTamperedExports is each attack on an export file
// that the hash chain alone lets pass (the plain replay of the tampered
// file passes, as it did before checkpoints), and what a replay trusting
// the node's key says of it.
func TestCheckpointsCatchTamperedExports(t *testing.T) {
	byTenant := tenantLines(t, chainExport(t))
	acme, beta := byTenant["acme"], byTenant["beta"]
	if len(acme) < 6 || len(beta) < 2 {
		t.Fatalf("fixture: %d acme and %d beta records", len(acme), len(beta))
	}
	key, other := signer(1), signer(2)
	cp := checkpointOf(t, key, acme)
	trust := audit.NewTrust(key.Public())

	rewritten := append([][]byte(nil), acme...)
	rewritten[2] = bytes.Replace(rewritten[2], []byte(`"actor":"key_a"`), []byte(`"actor":"key_x"`), 1)
	dropped := append(append([][]byte(nil), acme[:2]...), acme[3:]...)
	movedSeq := bytes.Replace(cp, []byte(`"seq":`), []byte(`"seq":1`), 1)

	tests := []struct {
		name        string
		export      []byte
		only        string
		plainPasses bool   // the hash chain alone lets it pass
		want        string // in the first mismatch; "" passes
	}{
		{"intact export", join(acme, one(cp)), "acme", true, ""},
		{"no checkpoint", join(acme), "acme", true, "covered by no signed checkpoint"},
		{"last record cut, checkpoint kept", join(acme[:len(acme)-1], one(cp)), "acme", true, "truncated"},
		{"last records and checkpoint cut", join(acme[:len(acme)-2]), "acme", true, "covered by no signed checkpoint"},
		{"record rewritten and the rest re-hashed", join(reseal(t, rewritten), one(cp)), "acme", true, "rewritten or re-hashed"},
		{"record dropped and the rest re-hashed", join(reseal(t, dropped), one(cp)), "acme", true, "truncated"},
		{"beta's records spliced into acme's export", join(acme, one(cp), beta), "acme", true, "mixed tenants"},
		{"beta's chain and its own checkpoint appended", join(acme, one(cp), beta, one(checkpointOf(t, key, beta))), "", true, ""},
		{"beta's chain without a checkpoint, no tenant claimed", join(acme, one(cp), beta), "", true, "mixed tenants"},
		{"checkpoint moved to another record", join(acme, one(movedSeq)), "acme", true, "does not verify"},
		{"checkpoint signed by another key", join(acme, one(checkpointOf(t, other, acme))), "acme", true, "not trusted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plain := replay.New(tc.only)
			if err := plain.ReadJSONL(bytes.NewReader(tc.export)); err != nil {
				t.Fatal(err)
			}
			if got := plain.Report().Pass; got != tc.plainPasses {
				t.Fatalf("the plain replay: pass=%t, want %t: %+v", got, tc.plainPasses, plain.Report().Mismatches)
			}
			requireVerdict(t, tc.export, tc.only, trust, nil, tc.want)
		})
	}
}

// TestRequiredCheckpoints: an export cut back to an earlier signed
// record, with that record's checkpoint, verifies on its own; the
// checkpoint a witness kept of a later record shows it was cut. The same
// check is how a live chain recreated shorter or different is caught.
func TestRequiredCheckpoints(t *testing.T) {
	acme := tenantLines(t, chainExport(t))["acme"]
	key := signer(1)
	trust := audit.NewTrust(key.Public())
	early := acme[:4]
	export := join(early, one(checkpointOf(t, key, early)))
	var later contract.Checkpoint
	if err := json.Unmarshal(checkpointOf(t, key, acme), &later); err != nil {
		t.Fatal(err)
	}
	var middle contract.Checkpoint
	if err := json.Unmarshal(checkpointOf(t, key, acme[:3]), &middle); err != nil {
		t.Fatal(err)
	}
	forged := middle
	forged.RecordHash = strings.Repeat("0", 64)

	tests := []struct {
		name     string
		required []contract.Checkpoint
		want     string
	}{
		{"alone it verifies", nil, ""},
		{"a witness's checkpoint of an earlier record", []contract.Checkpoint{middle}, ""},
		{"a witness's checkpoint of a later record", []contract.Checkpoint{later}, "before record"},
		{"a checkpoint that was not signed by the key", []contract.Checkpoint{forged}, "does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireVerdict(t, export, "acme", trust, tc.required, tc.want)
		})
	}
	// A record whose hash differs from the checkpoint of its sequence: the
	// chain was rewritten (or recreated) from there on.
	rewritten := append([][]byte(nil), acme...)
	rewritten[0] = bytes.Replace(rewritten[0], []byte(`"actor":"key_a"`), []byte(`"actor":"key_x"`), 1)
	if bytes.Equal(rewritten[0], acme[0]) {
		t.Fatal("fixture: the first record has no actor to rewrite")
	}
	rp := replay.New("acme")
	rp.Anchor(trust, false, false)
	rp.Require(middle)
	if err := rp.ReadJSONL(bytes.NewReader(join(reseal(t, rewritten)))); err != nil {
		t.Fatal(err)
	}
	if rep := rp.Report(); rep.Pass || !strings.Contains(rep.Mismatches[0].Reason, "rewritten or recreated") {
		t.Fatalf("a re-hashed chain against the checkpoint of record 3: %+v", rep.Mismatches)
	}
}
