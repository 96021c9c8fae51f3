package bench

import (
	"bytes"
	"fmt"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/replay"
)

// Chain builds a valid JSONL export of n records for tenant acme: each
// intent contributes a gate.allowed decision (with its full input, so
// replay re-decides it) and an execution record, as the live gate writes.
func Chain(n int) ([]byte, error) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	prev := contract.ZeroHash
	for seq := 1; seq <= n; seq++ {
		i := (seq - 1) / 2
		in := contract.ActionIntent{SchemaVersion: "v1", ID: fmt.Sprintf("in_%08d", i), Tenant: "acme", Action: action.FSWrite, Class: "A1",
			Target: fmt.Sprintf("notes/%d.txt", i), Params: map[string]string{"content": "x"}, IdempotencyKey: fmt.Sprint("k", i), Proposer: "key_a", CreatedAt: t0}
		in.Hash, _ = in.ComputeHash()
		var payload any
		kind := "execution.succeeded"
		if seq%2 == 1 {
			input := gate.Input{
				Global:       killswitch.Reading{Scope: "global", Revision: 1, Actor: "admin", Reason: "go", Fresh: true},
				TenantSwitch: killswitch.Reading{Scope: "acme", Revision: 2, Actor: "op", Reason: "go", Fresh: true},
				Approval: approval.Reading{Status: approval.StatusApproved, IntentHash: in.Hash, Proposer: "key_a", Approvers: []string{"key_op"},
					ExpiresAt: t0.Add(time.Hour), Revision: uint64(seq)},
				Tenant: "acme", Intent: in, PolicyHash: policy.Default().Hash(), Allowlist: []string{}, Time: t0,
				Principal: auth.Principal{ID: "key_a", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"*"}},
			}
			payload, kind = gate.DecisionPayload{Input: input, Decision: gate.Decide(input, policy.Default(), action.Builtin())}, "gate.allowed"
		} else {
			payload = contract.ExecutionResult{SchemaVersion: "v1", Tenant: "acme", IntentID: in.ID, IdempotencyKey: in.IdempotencyKey,
				Status: "succeeded", Output: map[string]string{"bytes": "1"}, StartedAt: t0, FinishedAt: t0}
		}
		p, err := contract.Canonical(payload)
		if err != nil {
			return nil, err
		}
		rec := contract.AuditRecord{SchemaVersion: "v1", Tenant: "acme", Seq: uint64(seq), Kind: kind, CorrelationID: in.ID, Actor: "key_a",
			Time: t0, Payload: p, PayloadHash: contract.Hash(p), PrevHash: prev}
		if rec.Hash, err = rec.ComputeHash(); err != nil {
			return nil, err
		}
		raw, err := contract.Canonical(rec)
		if err != nil {
			return nil, err
		}
		buf.Write(raw)
		buf.WriteByte('\n')
		prev = rec.Hash
	}
	return buf.Bytes(), nil
}

// ReplayResult is a replay throughput measurement.
type ReplayResult struct {
	Records   uint64  `json:"records"`
	Decisions uint64  `json:"decisions"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"records_per_second"`
	Pass      bool    `json:"pass"`
}

// Replay measures verification of an export (chain and decisions).
func Replay(export []byte) ReplayResult {
	start := time.Now()
	rp := replay.New("")
	_ = rp.ReadJSONL(bytes.NewReader(export)) // in-memory reader
	rep := rp.Report()
	s := time.Since(start).Seconds()
	return ReplayResult{Records: rep.Records, Decisions: rep.Decisions, Seconds: s, PerSecond: float64(rep.Records) / s, Pass: rep.Pass}
}
