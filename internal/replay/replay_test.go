package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/bench"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// open is a fresh, disengaged switch reading.
func open(scope string) killswitch.Reading {
	return killswitch.Reading{Scope: scope, Revision: 1, Actor: "admin", Reason: "go", Fresh: true}
}

// chainExport writes a real chain (decisions made by Decide) for two
// tenants on a real store and returns the JSONL export of both.
func chainExport(tb testing.TB) []byte {
	tb.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	l := audit.New(st.Audit)
	var out []byte
	for _, tn := range []string{"acme", "beta"} {
		t := tenant.MustParse(tn)
		for i, target := range []string{"notes/a.txt", "../escape", "b.txt", "killed.txt"} {
			in := contract.ActionIntent{SchemaVersion: "v1", ID: fmt.Sprintf("in_%d", i), Tenant: tn, Action: "fs.write", Class: "A1",
				Target: target, IdempotencyKey: fmt.Sprint("k", i), Proposer: "key_a", CreatedAt: t0}
			in.Hash, _ = in.ComputeHash()
			input := gate.Input{Global: open("global"), TenantSwitch: open(tn), Tenant: tn, Intent: in, PolicyHash: policy.Default().Hash(), Time: t0.Add(time.Duration(i) * time.Second),
				Principal: auth.Principal{ID: "key_a", Role: "agent", Tenants: []string{tn}, Actions: []string{"*"}}}
			input.Approval = approval.Reading{Status: approval.StatusApproved, IntentHash: in.Hash, Proposer: in.Proposer,
				Approvers: []string{"key_op"}, ExpiresAt: t0.Add(time.Hour), Revision: uint64(i + 1)}
			if target == "killed.txt" { // blocked by the global kill switch
				input.Global.Engaged, input.Global.Revision, input.Global.Reason = true, 7, "incident"
			}
			d := gate.Decide(input, policy.Default(), action.Builtin())
			kind := audit.KindGateAllowed
			if d.Verdict == contract.Deny {
				kind = audit.KindGateBlocked
			}
			if _, err := l.Append(context.Background(), t, audit.Entry{Kind: kind, CorrelationID: in.ID, Actor: "key_a", Time: input.Time,
				Payload: gate.DecisionPayload{Input: input, Decision: d}}); err != nil {
				tb.Fatal(err)
			}
			if _, err := l.Append(context.Background(), t, audit.Entry{Kind: "execution.started", CorrelationID: in.ID, Time: input.Time,
				Payload: map[string]string{"intent_id": in.ID}}); err != nil {
				tb.Fatal(err)
			}
		}
		if err := l.Scan(context.Background(), t, 0, 0, func(raw []byte, _ contract.AuditRecord) error {
			out = append(append(out, raw...), '\n')
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

func run(tb testing.TB, export []byte, only string) (contract.ReplayReport, []byte) {
	tb.Helper()
	rp := replay.New(only)
	if err := rp.ReadJSONL(bytes.NewReader(export)); err != nil {
		tb.Fatal(err)
	}
	rep := rp.Report()
	b, err := replay.Encode(rep)
	if err != nil {
		tb.Fatal(err)
	}
	return rep, b
}

func TestReplayPassesAndIsByteIdentical(t *testing.T) {
	export := chainExport(t)
	rep, first := run(t, export, "")
	if !rep.Pass || rep.Records != 16 || rep.Decisions != 8 || rep.DecisionsMatched != 8 || len(rep.Tenants) != 2 {
		t.Fatalf("report = %s", first)
	}
	for range 3 {
		if _, again := run(t, export, ""); !bytes.Equal(first, again) {
			t.Fatalf("reports differ:\n%s\n%s", first, again)
		}
	}
	// A second, independently built chain with the same content replays to
	// the same bytes: nothing machine- or run-specific leaks into it.
	if _, other := run(t, chainExport(t), ""); !bytes.Equal(first, other) {
		t.Fatalf("reports of identical chains differ:\n%s\n%s", first, other)
	}
	if h, _ := rep.ComputeHash(); h != rep.ReplayHash {
		t.Fatal("replay hash does not cover the report")
	}
	one, _ := run(t, export, "beta")
	if !one.Pass || one.Records != 8 || len(one.Tenants) != 1 || one.Tenants[0].Tenant != "beta" {
		t.Fatalf("--tenant beta report = %+v", one)
	}
	if !bytes.Contains(export, []byte(`"reasons":["killswitch_global_engaged"]`)) {
		t.Fatal("the export holds no kill switch block to replay")
	}
}

func TestReplayNamesTamperedRecord(t *testing.T) {
	export := chainExport(t)
	lines := bytes.Split(bytes.TrimSpace(export), []byte("\n"))
	tests := []struct {
		name   string
		line   int // 0-based line to alter
		mutate func([]byte) []byte
		seq    uint64
		reason string
	}{
		{"flip one byte of a target", 2, func(b []byte) []byte { return bytes.Replace(b, []byte("../escape"), []byte("../escapf"), 1) }, 3, "chain:"},
		{"flip the verdict and its hash stays", 0, func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"verdict":"ALLOW"`), []byte(`"verdict":"DENY!"`), 1)
		}, 1, "chain:"},
		{"flip a byte of the hash", 9, func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"hash":"`)) + 8
			c := bytes.Clone(b)
			c[i] ^= 1
			return c
		}, 2, "chain:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := make([][]byte, len(lines))
			copy(cp, lines)
			cp[tt.line] = tt.mutate(cp[tt.line])
			if bytes.Equal(cp[tt.line], lines[tt.line]) {
				t.Fatal("mutation changed nothing")
			}
			rep, _ := run(t, append(bytes.Join(cp, []byte("\n")), '\n'), "")
			if rep.Pass || len(rep.Mismatches) == 0 {
				t.Fatalf("tampered export passed: %+v", rep)
			}
			m := rep.Mismatches[0]
			if m.Seq != tt.seq || !strings.HasPrefix(m.Reason, tt.reason) {
				t.Fatalf("first mismatch = %+v, want seq %d %s", m, tt.seq, tt.reason)
			}
		})
	}
}

// TestReplayDetectsDecisionDrift: a record whose hashes are all consistent
// but whose recorded decision is not what Decide computes (a forged chain,
// or a gate that changed behaviour) fails replay.
func TestReplayDetectsDecisionDrift(t *testing.T) {
	in := contract.ActionIntent{SchemaVersion: "v1", ID: "in_1", Tenant: "acme", Action: "fs.write", Class: "A1", Target: "../x", IdempotencyKey: "k", Proposer: "p", CreatedAt: t0}
	in.Hash, _ = in.ComputeHash()
	input := gate.Input{Global: open("global"), TenantSwitch: open("acme"), Tenant: "acme", Intent: in, PolicyHash: policy.Default().Hash(), Time: t0,
		Principal: auth.Principal{ID: "p", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"*"}}}
	tests := []struct {
		name  string
		kind  string
		forge func(*contract.Decision)
	}{
		{"ALLOW recorded for a sandbox escape", audit.KindGateAllowed, func(d *contract.Decision) { d.Verdict, d.Reasons = contract.Allow, []string{} }},
		{"DENY with a different reason", audit.KindGateBlocked, func(d *contract.Decision) { d.Reasons = []string{gate.ReasonTenantInvalid} }},
		{"check detail altered", audit.KindGateBlocked, func(d *contract.Decision) { d.Checks[4].Detail = "fs-inside-sandbox" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forged := gate.Decide(input, policy.Default(), action.Builtin())
			tt.forge(&forged)
			payload, _ := contract.Canonical(gate.DecisionPayload{Input: input, Decision: forged})
			rec := contract.AuditRecord{SchemaVersion: "v1", Tenant: "acme", Seq: 1, Kind: tt.kind, CorrelationID: "in_1",
				Time: t0, Payload: payload, PayloadHash: contract.Hash(payload), PrevHash: contract.ZeroHash}
			rec.Hash, _ = rec.ComputeHash()
			raw, _ := contract.Canonical(rec)
			rep, _ := run(t, append(raw, '\n'), "")
			if rep.Pass || len(rep.Mismatches) != 1 || !strings.HasPrefix(rep.Mismatches[0].Reason, "decision:") || !rep.Tenants[0].ChainOK {
				t.Fatalf("forged decision: %+v", rep)
			}
		})
	}
}

// TestReplayFindsTheRecordedBundle: a decision recorded under an earlier
// default bundle replays after the default changed (the library keeps it by
// hash), and fails against a library without it.
func TestReplayFindsTheRecordedBundle(t *testing.T) {
	const firstMilestone = "e75ba5324c8d7539a399672a86fa286c184ea4085e94dfa6ced014e3fb2b9001"
	old, err := policy.Builtin().Lookup(firstMilestone)
	if err != nil || old.Hash() == policy.Default().Hash() {
		t.Fatalf("the first milestone's bundle: %v", err)
	}
	in := contract.ActionIntent{SchemaVersion: "v1", ID: "in_1", Tenant: "acme", Action: "fs.read", Class: "A0", Target: "a.txt", IdempotencyKey: "k", Proposer: "p", CreatedAt: t0}
	in.Hash, _ = in.ComputeHash()
	input := gate.Input{Global: open("global"), TenantSwitch: open("acme"), Tenant: "acme", Intent: in, PolicyHash: old.Hash(), Time: t0, Allowlist: []string{},
		Principal: auth.Principal{ID: "p", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"*"}}}
	d := gate.Decide(input, old, action.Builtin())
	if d.Verdict != contract.Allow {
		t.Fatalf("decision under the old bundle: %+v", d)
	}
	payload, _ := contract.Canonical(gate.DecisionPayload{Input: input, Decision: d})
	rec := contract.AuditRecord{SchemaVersion: "v1", Tenant: "acme", Seq: 1, Kind: audit.KindGateAllowed, CorrelationID: "in_1",
		Time: t0, Payload: payload, PayloadHash: contract.Hash(payload), PrevHash: contract.ZeroHash}
	rec.Hash, _ = rec.ComputeHash()
	raw, _ := contract.Canonical(rec)
	if rep, _ := run(t, append(raw, '\n'), ""); !rep.Pass {
		t.Fatalf("a decision under the earlier default does not replay: %+v", rep)
	}
	rp := replay.NewWith("", policy.NewLibrary(policy.Default()), action.Builtin())
	rp.Add(raw)
	if rep := rp.Report(); rep.Pass || len(rep.Mismatches) != 1 || !strings.Contains(rep.Mismatches[0].Reason, gate.ReasonPolicyUnknown) {
		t.Fatalf("without its bundle: %+v, want a mismatch naming %s", rep, gate.ReasonPolicyUnknown)
	}
}

func TestReplayOfNothingFails(t *testing.T) {
	rep, _ := run(t, nil, "")
	if rep.Pass {
		t.Fatal("an empty export passed replay")
	}
	rep, _ = run(t, []byte("not json\n"), "")
	if rep.Pass || len(rep.Mismatches) != 1 {
		t.Fatalf("garbage export: %+v", rep)
	}
}

// FuzzReplayLine: replay never panics on hostile lines and never passes a
// line that is not a valid first record.
func FuzzReplayLine(f *testing.F) {
	f.Add([]byte(`{"tenant":"acme","seq":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, line []byte) {
		rp := replay.New("")
		rp.Add(line)
		rep := rp.Report()
		if rep.Pass {
			var rec contract.AuditRecord
			if json.Unmarshal(line, &rec) != nil || rec.Seq != 1 {
				t.Fatalf("line passed replay: %q", line)
			}
		}
	})
}

// TestReadJSONLMatchesAdd: ReadJSONL prepares records concurrently in
// batches; its report must be byte-identical to feeding the same lines to
// Add one by one, for intact and tampered exports alike, over more than one
// batch. (Against the sequential verifier this replaced, 1,500 tampered
// exports gave byte-identical reports and exit codes; docs/PERFORMANCE.md.)
func TestReadJSONLMatchesAdd(t *testing.T) {
	gen, err := bench.Chain(1500)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(append(chainExport(t), gen...)), []byte("\n"))
	rng := rand.New(rand.NewPCG(7, 11))
	for n := range 8 {
		cp := slices.Clone(lines)
		for range n % 5 { // variant 0 is intact
			i := rng.IntN(len(cp))
			switch rng.IntN(4) {
			case 0:
				c := bytes.Clone(cp[i])
				c[rng.IntN(len(c))] ^= 1
				cp[i] = c
			case 1:
				cp = slices.Delete(cp, i, i+1)
			case 2:
				cp = slices.Insert(cp, i, []byte("not json"))
			case 3:
				j := rng.IntN(len(cp))
				cp[i], cp[j] = cp[j], cp[i]
			}
		}
		for _, only := range []string{"", "beta"} {
			_, got := run(t, append(bytes.Join(cp, []byte("\n")), '\n'), only)
			rp := replay.New(only)
			for _, l := range cp {
				rp.Add(l)
			}
			want, err := replay.Encode(rp.Report())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("variant %d (tenant %q): ReadJSONL and Add differ:\n%s\n%s", n, only, got, want)
			}
		}
	}
}

// TestReplayChecksTheIntentVersion: a decision about a v2 intent of a
// wide name replays; a decision about a v1 intent of a wide name, or a
// v2 intent of a V1 name, is a mismatch whatever verdict it records (the
// gate stores neither).
func TestReplayChecksTheIntentVersion(t *testing.T) {
	wide := action.Registration{Type: "notes.read_v2", Class: contract.A0, ReadOnly: true, Description: "a note",
		Effect: policy.FS, Executor: action.Executor{Kind: action.SandboxRead}}
	actions, err := action.New(append(action.Builtin().List(), wide)...)
	if err != nil {
		t.Fatal(err)
	}
	record := func(version, typ, class string, forge bool) []byte {
		in := contract.ActionIntent{SchemaVersion: version, ID: "in_1", Tenant: "acme", Action: typ, Class: class, Target: "notes/a.txt",
			IdempotencyKey: "k", Proposer: "p", CreatedAt: t0}
		in.Hash, _ = in.ComputeHash()
		input := gate.Input{Global: open("global"), TenantSwitch: open("acme"), Tenant: "acme", Intent: in, PolicyHash: policy.Default().Hash(), Time: t0,
			Principal: auth.Principal{ID: "p", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"*"}}}
		input.Approval = approval.Reading{Status: approval.StatusApproved, IntentHash: in.Hash, Proposer: in.Proposer,
			Approvers: []string{"key_op"}, ExpiresAt: t0.Add(time.Hour), Revision: 1}
		d := gate.Decide(input, policy.Default(), actions)
		if forge {
			d.Verdict, d.Reasons, d.Checks[3] = contract.Allow, []string{}, contract.CheckResult{Name: gate.CheckGrant, Outcome: contract.Pass}
		}
		kind := audit.KindGateAllowed
		if d.Verdict == contract.Deny {
			kind = audit.KindGateBlocked
		}
		payload, _ := contract.Canonical(gate.DecisionPayload{Input: input, Decision: d})
		rec := contract.AuditRecord{SchemaVersion: "v1", Tenant: "acme", Seq: 1, Kind: kind, CorrelationID: "in_1",
			Time: t0, Payload: payload, PayloadHash: contract.Hash(payload), PrevHash: contract.ZeroHash}
		rec.Hash, _ = rec.ComputeHash()
		raw, _ := contract.Canonical(rec)
		return append(raw, '\n')
	}
	replayed := func(export []byte) contract.ReplayReport {
		rp := replay.NewWith("", policy.Builtin(), actions)
		if err := rp.ReadJSONL(bytes.NewReader(export)); err != nil {
			t.Fatal(err)
		}
		return rp.Report()
	}
	if rep := replayed(record("v2", "notes.read_v2", contract.A0, false)); !rep.Pass || rep.DecisionsMatched != 1 {
		t.Fatalf("a v2 intent of a wide name: %+v", rep)
	}
	for _, tt := range []struct {
		name, version, typ, class string
		forge                     bool
	}{
		{"v1 intent of a wide name", "v1", "notes.read_v2", contract.A0, false},
		{"v2 intent of a V1 name", "v2", "fs.write", contract.A1, false},
		{"v2 intent of a V1 name, forged ALLOW", "v2", "fs.write", contract.A1, true},
		{"v1 intent of a wide name, forged ALLOW", "v1", "notes.read_v2", contract.A0, true},
		{"no version", "", "fs.write", contract.A1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := replayed(record(tt.version, tt.typ, tt.class, tt.forge))
			if rep.Pass || len(rep.Mismatches) != 1 || !strings.Contains(rep.Mismatches[0].Reason, "intent schema_version") || !rep.Tenants[0].ChainOK {
				t.Fatalf("%+v", rep)
			}
		})
	}
}
