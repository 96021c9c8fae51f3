// Package contract holds ExoArmur's V1 wire types, their canonical JSON form
// and the SHA-256 hashing used for everything that is hashed.
//
// The JSON Schemas of these types live in contracts/v1 and are frozen: a test
// pins their checksums. New capability is additive (new files, or v2):
// contracts/v2 holds the shapes that take wider action names (names.go:
// the name rules; an ActionIntent of a name only v2 allows carries
// SchemaVersionV2, every other record SchemaVersion).
package contract

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// SchemaVersion is carried by every V1 record: every record but the
// intent of an action whose name only v2 allows (SchemaVersionV2).
const SchemaVersion = "v1"

// Verdicts.
const (
	Allow = "ALLOW"
	Deny  = "DENY"
)

// Check outcomes.
const (
	Pass = "pass"
	Fail = "fail"
)

// Execution statuses.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusInDoubt   = "in_doubt"
)

// IntentRequest is the untrusted body of a proposal
// (contracts/v1/intent_request.schema.json).
type IntentRequest struct {
	Action         string            `json:"action"`
	Target         string            `json:"target"`
	Params         map[string]string `json:"params,omitempty"`
	IdempotencyKey string            `json:"idempotency_key"`
	Justification  string            `json:"justification,omitempty"`
	// ExecuteWhenApproved asks the background worker to execute the intent
	// once its approval is complete (through the same gate).
	ExecuteWhenApproved bool `json:"execute_when_approved,omitempty"`
}

// ApprovalDecision is the body of POST .../intents/{id}/approvals
// (contracts/v1/approval_decision.schema.json, additive to V1).
type ApprovalDecision struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

// KeyConsent is the body of POST /v1/keys/{id}/consent
// (contracts/v1/key_consent.schema.json).
type KeyConsent struct {
	Reason string `json:"reason"`
}

// ActionIntent is a stored, hash-bound proposal
// (contracts/v1/action_intent.schema.json). Hash is the SHA-256 of the
// canonical JSON of the intent with Hash empty.
type ActionIntent struct {
	SchemaVersion       string            `json:"schema_version"`
	ID                  string            `json:"id"`
	Tenant              string            `json:"tenant"`
	Action              string            `json:"action"`
	Class               string            `json:"class"`
	Target              string            `json:"target"`
	Params              map[string]string `json:"params,omitempty"`
	IdempotencyKey      string            `json:"idempotency_key"`
	Justification       string            `json:"justification,omitempty"`
	ExecuteWhenApproved bool              `json:"execute_when_approved,omitempty"`
	Proposer            string            `json:"proposer"`
	CreatedAt           time.Time         `json:"created_at"`
	Hash                string            `json:"hash,omitempty"`
}

// ComputeHash returns the intent's hash (over every field but Hash).
func (in ActionIntent) ComputeHash() (string, error) {
	in.Hash = ""
	return HashOf(in)
}

// KillSwitchRequest is the body of PUT /v1/killswitch and
// PUT /v1/tenants/{tenant}/killswitch (contracts/v1/killswitch_request.schema.json,
// additive to V1). The schema requires both fields, so a missing "engaged"
// is an error, never a silent disengage.
type KillSwitchRequest struct {
	Engaged bool   `json:"engaged"`
	Reason  string `json:"reason"`
}

// CheckResult is one ordered check of a decision.
type CheckResult struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Decision is the gate's verdict with its ordered checks
// (contracts/v1/decision.schema.json).
type Decision struct {
	SchemaVersion string        `json:"schema_version"`
	Tenant        string        `json:"tenant"`
	IntentID      string        `json:"intent_id"`
	IntentHash    string        `json:"intent_hash"`
	Verdict       string        `json:"verdict"`
	Reasons       []string      `json:"reasons"`
	Checks        []CheckResult `json:"checks"`
	PolicyHash    string        `json:"policy_hash"`
	DecidedAt     time.Time     `json:"decided_at"`
}

// AuditRecord is one link of a tenant's hash chain
// (contracts/v1/audit_record.schema.json). Hash is the SHA-256 of the
// canonical JSON of the record with Hash empty; PrevHash is the previous
// record's Hash (64 zeros for the first record).
type AuditRecord struct {
	SchemaVersion string          `json:"schema_version"`
	Tenant        string          `json:"tenant"`
	Seq           uint64          `json:"seq"`
	Kind          string          `json:"kind"`
	CorrelationID string          `json:"correlation_id"`
	Actor         string          `json:"actor"`
	RequestID     string          `json:"request_id,omitempty"`
	Time          time.Time       `json:"time"`
	Payload       json.RawMessage `json:"payload"`
	PayloadHash   string          `json:"payload_hash"`
	PrevHash      string          `json:"prev_hash"`
	Hash          string          `json:"hash,omitempty"`
}

// ZeroHash is the PrevHash of the first record of a chain.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ComputeHash returns the record's hash (over every field but Hash).
func (r AuditRecord) ComputeHash() (string, error) {
	r.Hash = ""
	b, _, err := r.appendCanonical(nil)
	if err != nil {
		return "", err
	}
	return Hash(b), nil
}

// Seal sets r.Hash and returns the record's canonical JSON with it, from
// one encoding of the record (the payload is canonicalized once): the
// bytes hashed are the record without its hash member, and the hash member
// is then spliced in at its place in key order.
func (r *AuditRecord) Seal() ([]byte, error) {
	r.Hash = ""
	b, at, err := r.appendCanonical(make([]byte, 0, len(r.Payload)+512))
	if err != nil {
		return nil, err
	}
	r.Hash = Hash(b)
	out := make([]byte, 0, len(b)+len(`,"hash":""`)+len(r.Hash))
	out = append(out, b[:at]...)
	out = append(out, `,"hash":"`...)
	out = append(out, r.Hash...)
	out = append(out, '"')
	return append(out, b[at:]...), nil
}

// AppendCanonical appends the record's canonical JSON to b: the same bytes
// as Canonical(r), written field by field in key order without reflection.
func (r AuditRecord) AppendCanonical(b []byte) ([]byte, error) {
	b, _, err := r.appendCanonical(b)
	return b, err
}

// appendCanonical also returns the offset where the hash member is or
// would be (right after correlation_id).
func (r AuditRecord) appendCanonical(b []byte) ([]byte, int, error) {
	b = append(b, `{"actor":`...)
	b = appendString(b, r.Actor)
	b = append(b, `,"correlation_id":`...)
	b = appendString(b, r.CorrelationID)
	at := len(b)
	if r.Hash != "" {
		b = append(b, `,"hash":`...)
		b = appendString(b, r.Hash)
	}
	b = append(b, `,"kind":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"payload":`...)
	switch {
	case r.Payload == nil:
		b = append(b, "null"...)
	default:
		c := canonicalizer{in: r.Payload, out: b}
		if err := c.document(); err != nil {
			return nil, 0, fmt.Errorf("audit record payload: %w", err)
		}
		b = c.out
	}
	b = append(b, `,"payload_hash":`...)
	b = appendString(b, r.PayloadHash)
	b = append(b, `,"prev_hash":`...)
	b = appendString(b, r.PrevHash)
	if r.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, r.RequestID)
	}
	b = append(b, `,"schema_version":`...)
	b = appendString(b, r.SchemaVersion)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"tenant":`...)
	b = appendString(b, r.Tenant)
	b = append(b, `,"time":"`...)
	b, err := r.Time.AppendText(b)
	if err != nil {
		return nil, 0, fmt.Errorf("audit record time: %w", err)
	}
	return append(b, `"}`...), at, nil
}

// ExecutionResult is the outcome of one execution
// (contracts/v1/execution_result.schema.json).
type ExecutionResult struct {
	SchemaVersion  string            `json:"schema_version"`
	Tenant         string            `json:"tenant"`
	IntentID       string            `json:"intent_id"`
	IdempotencyKey string            `json:"idempotency_key"`
	Status         string            `json:"status"`
	Output         map[string]string `json:"output,omitempty"`
	Error          string            `json:"error,omitempty"`
	StartedAt      time.Time         `json:"started_at"`
	FinishedAt     time.Time         `json:"finished_at,omitzero"`
}

// ReplayMismatch names one record that failed replay.
type ReplayMismatch struct {
	Tenant string `json:"tenant"`
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

// ReplayTenant summarizes one tenant's chain in a replay.
type ReplayTenant struct {
	Tenant    string `json:"tenant"`
	Records   uint64 `json:"records"`
	Decisions uint64 `json:"decisions"`
	ChainOK   bool   `json:"chain_ok"`
	HeadSeq   uint64 `json:"head_seq"`
	HeadHash  string `json:"head_hash"`
}

// ReplayReport is replay's canonical output
// (contracts/v1/replay_report.schema.json). ReplayHash is the SHA-256 of the
// canonical report with ReplayHash empty.
type ReplayReport struct {
	SchemaVersion    string           `json:"schema_version"`
	Pass             bool             `json:"pass"`
	Records          uint64           `json:"records"`
	Decisions        uint64           `json:"decisions"`
	DecisionsMatched uint64           `json:"decisions_matched"`
	Tenants          []ReplayTenant   `json:"tenants"`
	Mismatches       []ReplayMismatch `json:"mismatches"`
	ReplayHash       string           `json:"replay_hash,omitempty"`
}

// ComputeHash returns the report's hash (over every field but ReplayHash).
func (r ReplayReport) ComputeHash() (string, error) {
	r.ReplayHash = ""
	return HashOf(r)
}

// ProofBundle binds a tenant's audit head to a replay outcome
// (contracts/v1/proof_bundle.schema.json). ProofHash is the SHA-256 of the
// canonical bundle with ProofHash empty.
type ProofBundle struct {
	SchemaVersion string `json:"schema_version"`
	Tenant        string `json:"tenant"`
	Records       uint64 `json:"records"`
	HeadSeq       uint64 `json:"head_seq"`
	HeadHash      string `json:"head_hash"`
	ReplayPass    bool   `json:"replay_pass"`
	ReplayHash    string `json:"replay_hash"`
	ProofHash     string `json:"proof_hash,omitempty"`
}

// ComputeHash returns the bundle's hash (over every field but ProofHash).
func (p ProofBundle) ComputeHash() (string, error) {
	p.ProofHash = ""
	return HashOf(p)
}

// ExportTrailer is the HTTP trailer that ends a complete audit export
// (GET /v1/tenants/{t}/audit/export): the number of records sent. An
// export that failed after it began has none (the server aborts the
// response).
const ExportTrailer = "Exoarmur-Export-Records"
