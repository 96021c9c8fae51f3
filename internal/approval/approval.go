// Package approval is the operator approval control point. Executing a
// side-effect action (class A1, A2, A3) requires an approval of exactly that
// intent: bound to the intent's hash, granted by an operator other than the
// proposer (two distinct operators for A3), unexpired, and consumed by the
// one execution it authorizes. A denial by any operator is final.
//
// Approvals live in the approvals bucket (exoarmur_approvals, a kv.Bucket),
// one record per intent keyed <tenant>.<intent>, changed with
// compare-and-set and kept with history. Every request, grant, denial, expiry and consumption is an
// audit record in the tenant's chain. The gate records a Reading of the
// approval (with its KV revision) in every decision input, so replay
// reproduces each approval outcome.
package approval

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Statuses an operator can see.
const (
	StatusNone     = "none" // no approval needed or none requested (readings only)
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusDenied   = "denied"
	StatusExpired  = "expired"
	StatusExecuted = "executed"
)

// Audit kinds.
const (
	KindRequested = "approval.requested"
	KindGranted   = "approval.granted"
	KindDenied    = "approval.denied"
	KindExpired   = "approval.expired"
	KindExecuted  = "approval.executed"
)

// auditTimeout bounds the audit of a stored vote, detached from its caller.
const auditTimeout = 10 * time.Second

// DefaultTTL is how long an approval request stays open.
const DefaultTTL = 15 * time.Minute

// Vote is one operator's decision.
type Vote struct {
	Principal string    `json:"principal"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// Record is an approval (contracts/v1/approval_record.schema.json).
type Record struct {
	SchemaVersion string    `json:"schema_version"`
	Tenant        string    `json:"tenant"`
	IntentID      string    `json:"intent_id"`
	IntentHash    string    `json:"intent_hash"`
	Action        string    `json:"action"`
	Class         string    `json:"class"`
	Proposer      string    `json:"proposer"`
	Status        string    `json:"status"`
	Required      int       `json:"required"`
	Approvals     []Vote    `json:"approvals"`
	Denial        *Vote     `json:"denial,omitempty"`
	RequestedAt   time.Time `json:"requested_at"`
	ExpiresAt     time.Time `json:"expires_at"`
	ExecutedAt    time.Time `json:"executed_at,omitzero"`
}

// StatusAt is the status an operator sees at now: a pending or approved
// record past its expiry reads expired.
func (r *Record) StatusAt(now time.Time) string {
	if (r.Status == StatusPending || r.Status == StatusApproved) && !now.Before(r.ExpiresAt) {
		return StatusExpired
	}
	return r.Status
}

// Reading is an approval as the gate saw it; it is recorded in every
// decision input.
type Reading struct {
	Status     string    `json:"status"`
	IntentHash string    `json:"intent_hash,omitempty"`
	Proposer   string    `json:"proposer,omitempty"`
	Approvers  []string  `json:"approvers"`
	DeniedBy   string    `json:"denied_by,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	Revision   uint64    `json:"revision"`
	// Required is how many distinct approvals the intent needs: the
	// number its record froze when it was requested (Record.Required),
	// or what the rules asked when the gate read no record; never less
	// than the rules ask now. Absent in decisions recorded before it was
	// recorded, which were decided under Floor.
	Required int `json:"required,omitempty"`
	// ProposerOwner and ApproverOwners (one per approver, in order) are who
	// the credentials belong to: four eyes counts distinct owners other
	// than the proposer's. Absent in readings of approvals recorded before
	// owners existed, which count distinct approver IDs.
	ProposerOwner  string   `json:"proposer_owner,omitempty"`
	ApproverOwners []string `json:"approver_owners,omitempty"`
	// Withdrawn lists approvers whose credential was revoked or had expired
	// when the gate read the approval, or who may no longer approve it
	// (role, tenant or grants changed, or the rules no longer accept
	// them): their votes no longer count.
	Withdrawn []string `json:"withdrawn,omitempty"`
}

// Lineage is who stands behind one vote: the credential, the person it
// belongs to and who created it. Shown with each approval so operators and
// reviewers see when one person or one admin's keys carried a decision.
type Lineage struct {
	Principal string `json:"principal"`
	Owner     string `json:"owner"`
	CreatedBy string `json:"created_by,omitempty"`
}

// stored is the bucket value: the V1 record plus the lineage of the
// proposer and of each vote (the V1 record shape is frozen).
type stored struct {
	Record
	ProposerOwner string    `json:"proposer_owner,omitempty"`
	Lineage       []Lineage `json:"lineage,omitempty"` // one per approval, in order
	DenialLineage *Lineage  `json:"denial_lineage,omitempty"`
}

// Distinct counts the distinct owners among approvers, never the
// proposer's nor a withdrawn credential's: the one rule of four eyes, used
// by the gate's decision and by the store when it marks an approval
// complete. Readings without owners (recorded before owners existed) count
// distinct approver IDs.
func Distinct(r Reading) int {
	owners, proposer := r.ApproverOwners, r.ProposerOwner
	if len(owners) != len(r.Approvers) || proposer == "" {
		owners, proposer = r.Approvers, r.Proposer
	}
	n := 0
	var counted []string
	for i, o := range owners {
		if o != proposer && r.Approvers[i] != r.Proposer && !slices.Contains(counted, o) && !slices.Contains(r.Withdrawn, r.Approvers[i]) {
			counted = append(counted, o)
			n++
		}
	}
	return n
}

// readingOf turns a stored record (at revision rev) into a Reading.
func readingOf(s stored, rev uint64) Reading {
	r := &s.Record
	rd := Reading{Status: r.Status, IntentHash: r.IntentHash, Proposer: r.Proposer, Approvers: []string{}, ExpiresAt: r.ExpiresAt, Revision: rev, Required: r.Required}
	for _, v := range r.Approvals {
		rd.Approvers = append(rd.Approvers, v.Principal)
	}
	if r.Denial != nil {
		rd.DeniedBy = r.Denial.Principal
	}
	if s.ProposerOwner != "" && len(s.Lineage) == len(r.Approvals) {
		rd.ProposerOwner = s.ProposerOwner
		for _, l := range s.Lineage {
			rd.ApproverOwners = append(rd.ApproverOwners, l.Owner)
		}
	}
	return rd
}

// Errors callers branch on (the API maps them to 403/409).
var (
	ErrNotFound = errors.New("no approval for this intent")
	// ErrUnaudited: the vote (or the consumption) is stored but its audit
	// record could not be written.
	ErrUnaudited = errors.New("the change is recorded but its audit record could not be written")
	// ErrNotConsumed: a consumption that certainly did not happen (the
	// approval reads as it was).
	ErrNotConsumed    = errors.New("the approval was not used")
	ErrNotRequired    = errors.New("this intent needs no approval")
	ErrSelfApproval   = errors.New("the proposer cannot approve or deny their own intent")
	ErrNotOperator    = errors.New("approving needs the operator role for this tenant")
	ErrNotEntitled    = errors.New("this principal's grants do not cover this action, so it may not approve it")
	ErrAlreadyVoted   = errors.New("this principal, or another credential of the same owner, has already voted on this intent")
	ErrFinal          = errors.New("the intent was denied; a denial is final")
	ErrExpired        = errors.New("the approval request has expired")
	ErrConsumed       = errors.New("the approval was consumed by the execution")
	ErrBadDecision    = errors.New(`decision must be "approve" or "deny"`)
	ErrReasonRequired = errors.New("a reason is required")
)

// Notifier is told about each new approval request (the webhook).
type Notifier interface {
	Requested(ctx context.Context, t tenant.ID, r Record)
}

// Auditor appends to a tenant's chain (internal/audit.Log).
type Auditor interface {
	Append(ctx context.Context, t tenant.ID, e audit.Entry) (contract.AuditRecord, error)
}

// Store keeps approvals in the approvals bucket.
type Store struct {
	kv        kv.Bucket
	log       Auditor
	ttl       func(tenant.ID) time.Duration
	notify    Notifier
	retention time.Duration
	rules     *Rules
}

// SetRules makes the store ask and check what rules declare (default:
// BuiltinRules). Call it before the store is used.
func (s *Store) SetRules(r *Rules) { s.rules = r }

// Required returns how many distinct approvals an intent of class needs in
// tenant t under the store's rules (0: none; it opens no request).
func (s *Store) Required(t tenant.ID, class string) int { return s.rules.Required(t, class) }

// Eligible reports why p may not approve in under the store's rules (nil
// if it may).
func (s *Store) Eligible(t tenant.ID, in contract.ActionIntent, p *auth.Principal) error {
	return s.rules.Eligible(t, in, p)
}

// SetRetention makes every write of a record expire r after it (0: never),
// as the gate's retention does for intents (gate.Config.Retention). Call it
// before the store is used.
func (s *Store) SetRetention(r time.Duration) { s.retention = r }

// write stores data as intentID's record: created when rev is 0
// (kv.ErrExists if there is one), else over revision rev (kv.ErrConflict if
// it changed). Under a retention every write carries its TTL, so no
// earlier revision outlives the last.
func (s *Store) write(ctx context.Context, t tenant.ID, intentID string, data []byte, rev uint64) error {
	_, err := s.kv.Put(ctx, tenant.ApprovalKey(t, intentID), data, kv.PutOptions{Create: rev == 0, Revision: rev, TTL: s.retention})
	return err
}

// NewStore returns a store on the approvals bucket b. ttl gives each
// tenant's approval lifetime (nil: DefaultTTL); notify may be nil.
func NewStore(b kv.Bucket, log Auditor, ttl func(tenant.ID) time.Duration, notify Notifier) *Store {
	if ttl == nil {
		ttl = func(tenant.ID) time.Duration { return DefaultTTL }
	}
	return &Store{kv: b, log: log, ttl: ttl, notify: notify, rules: BuiltinRules()}
}

// Request opens the approval of a newly proposed intent that needs one. It
// is idempotent: an existing record is left as it is.
func (s *Store) Request(ctx context.Context, t tenant.ID, in contract.ActionIntent, proposer *auth.Principal, requestID string, now time.Time) error {
	if err := t.Check(); err != nil {
		return err
	}
	if proposer == nil || proposer.ID != in.Proposer {
		return fmt.Errorf("approval request %s: the proposer's principal is required", in.ID)
	}
	need := s.rules.Required(t, in.Class)
	if need == 0 {
		return nil
	}
	r := Record{
		SchemaVersion: contract.SchemaVersion, Tenant: t.String(), IntentID: in.ID, IntentHash: in.Hash, Action: in.Action,
		Class: in.Class, Proposer: in.Proposer, Status: StatusPending, Required: need, Approvals: []Vote{},
		RequestedAt: now.UTC(), ExpiresAt: now.UTC().Add(s.ttl(t)),
	}
	data, err := json.Marshal(stored{Record: r, ProposerOwner: proposer.OwnerID()})
	if err != nil {
		return err
	}
	// An existing record is left as it is (a repeated proposal).
	if _, _, err := s.get(ctx, t, in.ID); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("approval request %s: %w", in.ID, err)
	}
	// Audit first: a request is never open unrecorded. If the write then
	// fails, the retry records the request again (two records of one
	// request, never none).
	if _, err := s.log.Append(ctx, t, audit.Entry{Kind: KindRequested, CorrelationID: in.ID, Actor: proposer.ID, RequestID: requestID, Time: now, Payload: r}); err != nil {
		return fmt.Errorf("audit approval request %s: %w", in.ID, err)
	}
	if err := s.write(ctx, t, in.ID, data, 0); err != nil {
		if errors.Is(err, kv.ErrExists) {
			return nil // a concurrent request won
		}
		return fmt.Errorf("approval request %s: %w", in.ID, err)
	}
	if s.notify != nil {
		s.notify.Requested(ctx, t, r)
	}
	return nil
}

// Get returns the approval of an intent and its KV revision.
func (s *Store) Get(ctx context.Context, t tenant.ID, intentID string) (Record, uint64, error) {
	st, rev, err := s.get(ctx, t, intentID)
	return st.Record, rev, err
}

func (s *Store) get(ctx context.Context, t tenant.ID, intentID string) (stored, uint64, error) {
	if err := t.Check(); err != nil {
		return stored{}, 0, err
	}
	e, err := s.kv.Get(ctx, tenant.ApprovalKey(t, intentID))
	if errors.Is(err, kv.ErrNotFound) {
		return stored{}, 0, ErrNotFound
	}
	if err != nil {
		return stored{}, 0, fmt.Errorf("load approval %s: %w", intentID, err)
	}
	var r stored
	if err := json.Unmarshal(e.Value, &r); err != nil {
		return stored{}, 0, fmt.Errorf("decode approval %s: %w", intentID, err)
	}
	return r, e.Revision, nil
}

// Read returns the gate's reading of an intent's approval: StatusNone when
// there is none. Store errors are returned: the gate fails closed on them.
func (s *Store) Read(ctx context.Context, t tenant.ID, intentID string) (Reading, error) {
	r, rev, err := s.get(ctx, t, intentID)
	if errors.Is(err, ErrNotFound) {
		return Reading{Status: StatusNone, Approvers: []string{}}, nil
	}
	if err != nil {
		return Reading{}, err
	}
	return readingOf(r, rev), nil
}

// update applies fn to the current record with compare-and-set, retrying on
// a concurrent change.
func (s *Store) update(ctx context.Context, t tenant.ID, intentID string, fn func(*stored) error) (stored, error) {
	for attempt := 0; ; attempt++ {
		r, rev, err := s.get(ctx, t, intentID)
		if err != nil {
			return stored{}, err
		}
		if err := fn(&r); err != nil {
			return r, err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return stored{}, err
		}
		err = s.write(ctx, t, intentID, data, rev)
		if err == nil {
			return r, nil
		}
		if attempt < 16 && errors.Is(err, kv.ErrConflict) {
			continue
		}
		return stored{}, fmt.Errorf("update approval %s: %w", intentID, err)
	}
}

// Decide records an operator's approve or deny of intent in. The principal
// is the authenticated caller, never a name from the request body. A vote
// counts only from a principal allowed to approve the action (Eligible),
// once per owner, never from the proposer's owner.
// Ballot is one vote on an intent: who casts it, approve or deny, and why.
type Ballot struct {
	Intent    contract.ActionIntent
	Principal *auth.Principal // the authenticated caller, never a name from a request body
	Decision  string          // "approve" or "deny"
	Reason    string
	RequestID string
	Now       time.Time
}

func (s *Store) Decide(ctx context.Context, t tenant.ID, b Ballot) (Record, error) {
	in, p, decision, reason, requestID, now := b.Intent, b.Principal, b.Decision, b.Reason, b.RequestID, b.Now
	if err := t.Check(); err != nil {
		return Record{}, err
	}
	switch {
	case decision != "approve" && decision != "deny":
		return Record{}, ErrBadDecision
	case reason == "":
		return Record{}, ErrReasonRequired
	}
	if err := s.rules.Eligible(t, in, p); err != nil {
		return Record{}, err
	}
	if s.rules.Required(t, in.Class) == 0 {
		return Record{}, ErrNotRequired
	}
	expired := false
	owner := p.OwnerID()
	lin := Lineage{Principal: p.ID, Owner: owner, CreatedBy: p.CreatedBy}
	r, err := s.update(ctx, t, in.ID, func(r *stored) error {
		switch r.StatusAt(now) {
		case StatusDenied:
			return ErrFinal
		case StatusExecuted:
			return ErrConsumed
		case StatusExpired:
			if r.Status == StatusExpired {
				return ErrExpired
			}
			r.Status, expired = StatusExpired, true
			return nil
		}
		if r.IntentHash != in.Hash {
			return fmt.Errorf("approval is bound to another version of the intent: %w", ErrFinal)
		}
		if r.ProposerOwner != "" && owner == r.ProposerOwner {
			return fmt.Errorf("%w (another credential of the proposer's owner)", ErrSelfApproval)
		}
		for i, v := range r.Approvals {
			if v.Principal == p.ID || (i < len(r.Lineage) && r.Lineage[i].Owner == owner) {
				return ErrAlreadyVoted
			}
		}
		vote := Vote{Principal: p.ID, Reason: reason, At: now.UTC()}
		if decision == "deny" {
			r.Status, r.Denial, r.DenialLineage = StatusDenied, &vote, &lin
			return nil
		}
		if len(r.Lineage) == len(r.Approvals) {
			r.Lineage = append(r.Lineage, lin)
		}
		r.Approvals = append(r.Approvals, vote)
		// Rules raised since the request apply to it (the gate asks the
		// same: the frozen number, raised to the rules' now).
		r.Required = max(r.Required, s.rules.Required(t, in.Class))
		if Distinct(readingOf(*r, 0)) >= r.Required {
			r.Status = StatusApproved
		}
		return nil
	})
	if err != nil {
		return r.Record, err
	}
	kind := KindGranted
	switch {
	case expired:
		kind = KindExpired
	case decision == "deny":
		kind = KindDenied
	}
	// The vote is stored: its record must not depend on the caller
	// staying (a client that goes away after the write).
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, aerr := s.log.Append(actx, t, audit.Entry{Kind: kind, CorrelationID: in.ID, Actor: p.ID, RequestID: requestID, Time: now,
		Payload: map[string]any{"approval": r.Record, "decision": decision, "reason": reason, "lineage": lin}}); aerr != nil {
		return r.Record, fmt.Errorf("%w: approval %s: %w", ErrUnaudited, in.ID, aerr)
	}
	if expired {
		return r.Record, ErrExpired
	}
	return r.Record, nil
}

// Lineage returns who stands behind each vote of an intent's approval (in
// vote order, the denial last), for operators and reviewers.
func (s *Store) Lineage(ctx context.Context, t tenant.ID, intentID string) ([]Lineage, error) {
	r, _, err := s.get(ctx, t, intentID)
	if err != nil {
		return nil, err
	}
	return r.lineage(), nil
}

// lineage is who stands behind each vote, in vote order, the denial last.
func (s stored) lineage() []Lineage {
	out := append([]Lineage{}, s.Lineage...)
	if s.DenialLineage != nil {
		out = append(out, *s.DenialLineage)
	}
	return out
}

// Consume marks an approval executed, with compare-and-set on the revision
// the gate's decision read, so an approval authorizes exactly one execution
// and a denial that raced the decision wins.
// Consumption is an execution using up the approval it was decided under.
type Consumption struct {
	IntentID  string
	Revision  uint64 // the approval's revision the decision read
	Actor     string
	RequestID string
	Now       time.Time
}

func (s *Store) Consume(ctx context.Context, t tenant.ID, c Consumption) error {
	intentID, rev, actor, requestID, now := c.IntentID, c.Revision, c.Actor, c.RequestID, c.Now
	r, cur, err := s.get(ctx, t, intentID)
	if err != nil {
		return err
	}
	if cur != rev || r.Status != StatusApproved {
		return fmt.Errorf("approval of %s changed since the decision (revision %d, now %d, %s): %w", intentID, rev, cur, r.Status, ErrConsumed)
	}
	r.Status, r.ExecutedAt = StatusExecuted, now.UTC()
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.write(ctx, t, intentID, data, rev); err != nil {
		// The write may have landed with its acknowledgement lost: read
		// it back to tell which.
		back, cur, rerr := s.get(ctx, t, intentID)
		switch {
		case rerr == nil && cur == rev && back.Status == StatusApproved:
			return fmt.Errorf("consume approval %s: %w: %w", intentID, ErrNotConsumed, err)
		case rerr == nil && back.Status == StatusExecuted && back.ExecutedAt.Equal(r.ExecutedAt):
			// It landed: record it below.
		case rerr == nil && errors.Is(err, kv.ErrConflict):
			return fmt.Errorf("approval of %s changed since the decision: %w", intentID, ErrConsumed)
		default:
			return fmt.Errorf("consume approval %s: it may or may not be used: %w", intentID, errors.Join(err, rerr))
		}
	}
	if _, err := s.log.Append(ctx, t, audit.Entry{Kind: KindExecuted, CorrelationID: intentID, Actor: actor, RequestID: requestID, Time: now, Payload: r.Record}); err != nil {
		return fmt.Errorf("%w: consumption of %s: %w", ErrUnaudited, intentID, err)
	}
	return nil
}

// List returns t's approvals whose status at now is status ("" = all),
// oldest request first.
// Listed is an approval with who stands behind each of its votes.
type Listed struct {
	Record  Record
	Lineage []Lineage
}

func (s *Store) List(ctx context.Context, t tenant.ID, status string, now time.Time) ([]Listed, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	keys, err := s.kv.Keys(ctx, tenant.ApprovalKey(t, "*"))
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	out := []Listed{}
	for _, key := range keys {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("list approvals: %w", err)
		}
		var r stored
		if err := json.Unmarshal(e.Value, &r); err != nil {
			return nil, fmt.Errorf("list approvals: decode %s: %w", key, err)
		}
		r.Status = r.StatusAt(now)
		if status == "" || r.Status == status {
			out = append(out, Listed{Record: r.Record, Lineage: r.lineage()})
		}
	}
	slices.SortFunc(out, func(a, b Listed) int {
		return cmp.Or(a.Record.RequestedAt.Compare(b.Record.RequestedAt), cmp.Compare(a.Record.IntentID, b.Record.IntentID))
	})
	return out, nil
}

// PendingCount counts t's pending (unexpired) approval requests, for the
// gate's pending-approvals quota. It reads each of t's records:
// O(t's approvals).
func (s *Store) PendingCount(ctx context.Context, t tenant.ID, now time.Time) (int, error) {
	keys, err := s.kv.Keys(ctx, tenant.ApprovalKey(t, "*"))
	if err != nil {
		return 0, fmt.Errorf("count pending approvals: %w", err)
	}
	n := 0
	for _, key := range keys {
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			continue
		case err != nil:
			return 0, fmt.Errorf("count pending approvals: %w", err)
		}
		var r Record
		if json.Unmarshal(e.Value, &r) == nil && r.StatusAt(now) == StatusPending {
			n++
		}
	}
	return n, nil
}

// PendingCounts counts pending (unexpired) approvals per tenant across the
// bucket, for the metrics endpoint. It lists every record: O(approvals).
func (s *Store) PendingCounts(ctx context.Context, now time.Time) map[string]int {
	out := map[string]int{}
	keys, err := s.kv.Keys(ctx, "")
	if err != nil {
		return out
	}
	for _, key := range keys {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var r Record
		if json.Unmarshal(e.Value, &r) == nil && r.StatusAt(now) == StatusPending {
			out[r.Tenant]++
		}
	}
	return out
}
