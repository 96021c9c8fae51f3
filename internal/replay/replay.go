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
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
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

// Bundles finds the policy bundle a decision was recorded under, by its
// hash (policy.Library).
type Bundles interface {
	Lookup(hash string) (*policy.Bundle, error)
}

// Replayer accumulates records and produces a report.
type Replayer struct {
	only     string // replay only this tenant ("" = all)
	policies Bundles
	actions  *action.Registry
	tenants  map[string]*chain
	bad      []contract.ReplayMismatch
	lines    uint64

	// Checkpoints (Anchor, Require): trust verifies every checkpoint
	// line; required are checkpoints the chains must contain, per
	// tenant, by sequence; claimed makes a record of another tenant than
	// only a mismatch; endCovered asks every chain to end at a record a
	// checkpoint line covers.
	trust      audit.Trust
	required   map[string][]contract.Checkpoint
	claimed    bool
	endCovered bool
	// unverified counts checkpoint lines read without a trust to check them.
	unverified uint64
}

type chain struct {
	v         *audit.Verifier
	records   uint64
	decisions uint64
	matched   uint64
	ok        bool
	covered   uint64 // the last sequence a checkpoint line covered
	signed    bool   // a valid checkpoint line covered one of its records
	req       int    // the next of required[tenant] to meet
	cpFailed  bool   // a checkpoint line of it failed (and said why)
}

// New returns a Replayer that re-decides with the bundles and the action
// types this binary shipped (policy.Builtin, action.Builtin); tenant
// restricts it to one tenant's records.
func New(tenant string) *Replayer { return NewWith(tenant, policy.Builtin(), action.Builtin()) }

// NewWith returns a Replayer that finds each decision's bundle in policies
// and its action type in actions.
func NewWith(tenant string, policies Bundles, actions *action.Registry) *Replayer {
	return &Replayer{only: tenant, policies: policies, actions: actions, tenants: map[string]*chain{}}
}

// Add verifies one record, given exactly as stored.
func (r *Replayer) Add(raw []byte) { r.apply(prepare(raw, r.only, r.policies, r.actions)) }

// head is what a record says of its place, read leniently so that a
// record failing verification can still be named.
type head struct {
	Tenant string `json:"tenant"`
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Hash   string `json:"hash"`
	Type   string `json:"type"` // contract.CheckpointType on a checkpoint line
}

// prepared is one record with everything that depends on it alone
// computed: its checks, its head and its re-decided decision. prepare is
// pure, so ReadJSONL prepares records concurrently; apply takes them in
// order.
type prepared struct {
	head     head
	headOK   bool
	chk      audit.Checked
	recOK    bool   // a record could be decoded (strictly, or leniently after a failed check)
	decision bool   // its kind carries a decision
	reason   string // why the re-decided decision differs ("" if identical)
	// A checkpoint line: cp decoded, or cpErr why it could not be.
	isCP  bool
	cp    contract.Checkpoint
	cpErr error
}

func prepare(raw []byte, only string, policies Bundles, actions *action.Registry) prepared {
	var p prepared
	p.chk = audit.Check(raw)
	rec := p.chk.Rec
	if p.chk.Parsed {
		// One canonical JSON object, strictly decoded: the lenient reads
		// below would give exactly these fields.
		p.head = head{Tenant: rec.Tenant, Seq: rec.Seq, Kind: rec.Kind, Hash: rec.Hash}
		p.headOK, p.recOK = true, true
	} else {
		p.headOK = json.Unmarshal(raw, &p.head) == nil
		rec = contract.AuditRecord{}
		p.recOK = json.Unmarshal(raw, &rec) == nil
	}
	p.headOK = p.headOK && p.head.Tenant != ""
	if p.headOK && p.head.Type == contract.CheckpointType {
		p.isCP = true
		p.cp, p.cpErr = contract.DecodeCheckpoint(raw)
		return p
	}
	if !p.headOK || (only != "" && p.head.Tenant != only) || !p.recOK {
		return p
	}
	want, isDecision := decisionKinds[rec.Kind]
	if isDecision {
		p.decision, p.reason = true, redecide(rec, want, policies, actions)
	}
	return p
}

// apply accounts one prepared record, in export order.
func (r *Replayer) apply(p prepared) {
	r.lines++
	if !p.headOK {
		r.bad = append(r.bad, contract.ReplayMismatch{Seq: 0, Kind: "", Reason: fmt.Sprintf("line %d: not an audit record", r.lines)})
		return
	}
	if p.isCP {
		r.applyCheckpoint(p)
		return
	}
	if r.only != "" && p.head.Tenant != r.only {
		if r.claimed {
			r.bad = append(r.bad, contract.ReplayMismatch{Tenant: r.only, Seq: 0, Kind: p.head.Kind,
				Reason: fmt.Sprintf("tenants: line %d is a record of tenant %q (seq %d) in an export claimed for %q (mixed tenants)", r.lines, clip(p.head.Tenant), p.head.Seq, r.only)})
		}
		return
	}
	c := r.chain(p.head.Tenant)
	c.records++
	defer r.meetRequired(p.head.Tenant, c, p.head.Seq, p.head.Hash)
	if _, err := c.v.NextChecked(p.chk); err != nil {
		c.ok = false
		var ve *audit.VerifyError
		reason := err.Error()
		seq := p.head.Seq
		if asVerify(err, &ve) {
			reason, seq = ve.Reason, ve.Seq
		}
		r.bad = append(r.bad, contract.ReplayMismatch{Tenant: p.head.Tenant, Seq: seq, Kind: p.head.Kind, Reason: "chain: " + reason})
		// Resynchronise on the stored link so one altered record is named
		// once and does not hide the state of the records after it.
		c.v.Resync(p.head.Seq, p.head.Hash)
		// Still re-decide what can be decoded.
		if !p.recOK {
			return
		}
	}
	if !p.decision {
		return
	}
	c.decisions++
	if p.reason != "" {
		r.bad = append(r.bad, contract.ReplayMismatch{Tenant: p.head.Tenant, Seq: p.head.Seq, Kind: p.head.Kind, Reason: "decision: " + p.reason})
		return
	}
	c.matched++
}

func (r *Replayer) chain(t string) *chain {
	c, ok := r.tenants[t]
	if !ok {
		c = &chain{v: audit.NewVerifier(t), ok: true}
		r.tenants[t] = c
	}
	return c
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
func redecide(rec contract.AuditRecord, wantVerdict string, policies Bundles, actions *action.Registry) string {
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
	// The gate stores an intent of a V1 name as v1 and of a wider name as
	// v2, nothing else: a decision about any other intent was not made by
	// it, whatever verdict it records.
	if err := contract.CheckIntentVersion(p.Input.Intent.SchemaVersion, p.Input.Intent.Action); err != nil {
		return err.Error()
	}
	// The bundle the input names; an unknown one re-decides as
	// policy_unknown and so differs from the recorded decision. A bundle
	// the library refused (a corrupt archived entry) does too, and the
	// mismatch says why.
	bundle, lookupErr := policies.Lookup(p.Input.PolicyHash)
	got := gate.Decide(p.Input, bundle, actions)
	replayed, err := contract.Canonical(got)
	if err != nil {
		return "cannot canonicalize decision"
	}
	if !bytes.Equal(p.Decision, replayed) {
		var recorded contract.Decision
		_ = json.Unmarshal(p.Decision, &recorded)
		why := fmt.Sprintf("recorded %s %v, replayed %s %v", recorded.Verdict, recorded.Reasons, got.Verdict, got.Reasons)
		if lookupErr != nil && !errors.Is(lookupErr, policy.ErrUnknownBundle) {
			why += " (" + lookupErr.Error() + ")"
		}
		return why
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
		Mismatches:    append(slices.Clone(r.bad), r.endMismatches()...),
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

// ReadJSONL feeds every line of an export to r. Records are prepared
// (checked, re-decided) concurrently in batches and applied in order, so
// the report is the one Add line by line would give.
func (r *Replayer) ReadJSONL(src io.Reader) error {
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	batch := make([][]byte, 0, batchSize)
	out := make([]prepared, batchSize)
	flush := func() {
		r.prepareAll(batch, out[:len(batch)])
		for _, p := range out[:len(batch)] {
			r.apply(p)
		}
		batch = batch[:0]
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if batch = append(batch, bytes.Clone(line)); len(batch) == batchSize {
			flush()
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	return nil
}

// batchSize is how many records ReadJSONL prepares at a time.
const batchSize = 1024

// prepareAll prepares lines into out, one worker per processor.
func (r *Replayer) prepareAll(lines [][]byte, out []prepared) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(lines)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(lines); i = int(next.Add(1) - 1) {
				out[i] = prepare(lines[i], r.only, r.policies, r.actions)
			}
		})
	}
	wg.Wait()
}

// Encode returns the report's canonical JSON followed by a newline.
func Encode(rep contract.ReplayReport) ([]byte, error) {
	b, err := contract.Canonical(rep)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
