// Package replay proves the audit log: it verifies every link of every
// tenant's hash chain and recomputes every recorded decision with the same
// pure gate.Decide from the recorded input. Its report is canonical JSON,
// byte-identical across runs and machines for the same records.
//
// Replay is read-only by construction: it reads bytes and calls pure
// functions, and a test fails if it ever imports an executor.
package replay

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// MaxLine is the longest export line accepted.
const MaxLine = 16 << 20

// decisionKinds carry a gate.DecisionPayload; the verdict each requires.
var decisionKinds = map[string]string{
	audit.KindIntentProposed: "", // a preview: either verdict
	audit.KindAccessDenied:   contract.Deny,
	audit.KindGateAllowed:    contract.Allow,
	audit.KindGateBlocked:    contract.Deny,
}

// Replayer accumulates records and produces a report.
type Replayer struct {
	only    string // replay only this tenant ("" = all)
	tenants map[string]*chain
	bad     []contract.ReplayMismatch
	lines   uint64
}

type chain struct {
	v         *audit.Verifier
	records   uint64
	decisions uint64
	matched   uint64
	ok        bool
}

// New returns a Replayer; tenant restricts it to one tenant's records.
func New(tenant string) *Replayer {
	return &Replayer{only: tenant, tenants: map[string]*chain{}}
}

// Add verifies one record, given exactly as stored.
func (r *Replayer) Add(raw []byte) {
	r.lines++
	var head struct {
		Tenant string `json:"tenant"`
		Seq    uint64 `json:"seq"`
		Kind   string `json:"kind"`
		Hash   string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.Tenant == "" {
		r.bad = append(r.bad, contract.ReplayMismatch{Seq: 0, Kind: "", Reason: fmt.Sprintf("line %d: not an audit record", r.lines)})
		return
	}
	if r.only != "" && head.Tenant != r.only {
		return
	}
	c, ok := r.tenants[head.Tenant]
	if !ok {
		c = &chain{v: audit.NewVerifier(head.Tenant), ok: true}
		r.tenants[head.Tenant] = c
	}
	c.records++
	rec, err := c.v.Next(raw)
	if err != nil {
		c.ok = false
		var ve *audit.VerifyError
		reason := err.Error()
		seq := head.Seq
		if asVerify(err, &ve) {
			reason, seq = ve.Reason, ve.Seq
		}
		r.bad = append(r.bad, contract.ReplayMismatch{Tenant: head.Tenant, Seq: seq, Kind: head.Kind, Reason: "chain: " + reason})
		// Resynchronise on the stored link so one altered record is named
		// once and does not hide the state of the records after it.
		c.v.Resync(head.Seq, head.Hash)
		// Still re-decide what can be decoded.
		if err := json.Unmarshal(raw, &rec); err != nil {
			return
		}
	}
	want, isDecision := decisionKinds[rec.Kind]
	if !isDecision {
		return
	}
	c.decisions++
	if reason := redecide(rec, want); reason != "" {
		r.bad = append(r.bad, contract.ReplayMismatch{Tenant: rec.Tenant, Seq: rec.Seq, Kind: rec.Kind, Reason: "decision: " + reason})
		return
	}
	c.matched++
}

func asVerify(err error, ve **audit.VerifyError) bool {
	v, ok := err.(*audit.VerifyError)
	if ok {
		*ve = v
	}
	return ok
}

// redecide recomputes a recorded decision and returns why it differs ("" if
// identical).
func redecide(rec contract.AuditRecord, wantVerdict string) string {
	// The payload is canonical (the record was), so the recorded decision's
	// bytes are canonical too: compare them with the recomputed decision.
	var p struct {
		Input    gate.Input      `json:"input"`
		Decision json.RawMessage `json:"decision"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || len(p.Decision) == 0 {
		return fmt.Sprintf("payload is not a decision record: %v", err)
	}
	got := gate.Decide(p.Input)
	replayed, err := contract.Canonical(got)
	if err != nil {
		return "cannot canonicalize decision"
	}
	if !bytes.Equal(p.Decision, replayed) {
		var recorded contract.Decision
		_ = json.Unmarshal(p.Decision, &recorded)
		return fmt.Sprintf("recorded %s %v, replayed %s %v", recorded.Verdict, recorded.Reasons, got.Verdict, got.Reasons)
	}
	if wantVerdict != "" && got.Verdict != wantVerdict {
		return fmt.Sprintf("record kind %s does not match verdict %s", rec.Kind, got.Verdict)
	}
	if p.Input.Tenant != rec.Tenant {
		return "decision input names another tenant"
	}
	return ""
}

// Report returns the canonical report with its hash.
func (r *Replayer) Report() contract.ReplayReport {
	rep := contract.ReplayReport{
		SchemaVersion: contract.SchemaVersion,
		Tenants:       []contract.ReplayTenant{},
		Mismatches:    slices.Clone(r.bad),
	}
	if rep.Mismatches == nil {
		rep.Mismatches = []contract.ReplayMismatch{}
	}
	for name, c := range r.tenants {
		seq, hash := c.v.Head()
		rep.Tenants = append(rep.Tenants, contract.ReplayTenant{
			Tenant: name, Records: c.records, Decisions: c.decisions, ChainOK: c.ok, HeadSeq: seq, HeadHash: hash,
		})
		rep.Records += c.records
		rep.Decisions += c.decisions
		rep.DecisionsMatched += c.matched
	}
	slices.SortFunc(rep.Tenants, func(a, b contract.ReplayTenant) int { return cmp.Compare(a.Tenant, b.Tenant) })
	slices.SortStableFunc(rep.Mismatches, func(a, b contract.ReplayMismatch) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Seq, b.Seq))
	})
	rep.Pass = len(rep.Mismatches) == 0 && rep.Records > 0
	rep.ReplayHash, _ = rep.ComputeHash() // a report of plain fields always encodes
	return rep
}

// ReadJSONL feeds every line of an export to r.
func (r *Replayer) ReadJSONL(src io.Reader) error {
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r.Add(bytes.Clone(line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	return nil
}

// Encode returns the report's canonical JSON followed by a newline.
func Encode(rep contract.ReplayReport) ([]byte, error) {
	b, err := contract.Canonical(rep)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
