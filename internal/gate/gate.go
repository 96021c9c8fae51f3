package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Intent states as shown to callers.
const (
	StateProposed  = "proposed"
	StateBlocked   = "blocked"
	StateExecuting = "executing"
	StateSucceeded = contract.StatusSucceeded
	StateFailed    = contract.StatusFailed
	StateInDoubt   = contract.StatusInDoubt
)

// Config wires a Gate.
type Config struct {
	// Chain, if set, says why a tenant's audit chain must not be trusted
	// (the checkpointer found it no longer extends its last checkpoint:
	// checkpoint.Checkpointer.Diverged), or "": every decision then blocks.
	Chain func(tenant.ID) string

	Intents     kv.Bucket // intents bucket
	Idempotency kv.Bucket // idempotency ledger bucket
	Audit       Auditor
	Executors   Executors
	Switches    SwitchReader   // the kill switches' watched local copy
	Approvals   Approvals      // operator approvals
	Policy      *policy.Bundle // with no Policies, every tenant's bundle; default: policy.Default()
	// Policies, when set, says which bundle each tenant decides under
	// (active.Set: activated per tenant, globally, else the node's);
	// Policy is then unused.
	Policies PolicySource
	// Shadow, when set, is a candidate bundle evaluated beside Policy on
	// every decision and never enforced: each difference is counted,
	// logged and recorded (policy.shadow_differs); Gate.Shadow sums up.
	Shadow    *policy.Bundle
	Actions   *action.Registry // the action types (default: action.Builtin()); Executors runs them
	Allowlist []string         // http host allowlist, recorded in every input
	Now       func() time.Time // injected clock (default time.Now)
	Work      WorkQueue        // the work queue (execute_when_approved): DecideApproval enqueues, RunWorker consumes; nil disables it
	Node      string           // this node's name, recorded in claims
	Logger    *slog.Logger

	// Lease is how long a running execution's claim is held before its
	// node renews it (default DefaultLease): a node that dies leaves it in
	// doubt, on every node, this long after its last renewal at most.
	Lease time.Duration
	// ExecTimeout bounds every executor call (default DefaultExecTimeout).
	ExecTimeout time.Duration
	// Principals, when set, is asked whether each approver of an approved
	// intent still holds its credential: votes of revoked or expired keys
	// stop counting (recorded in the input as Approval.Withdrawn).
	Principals PrincipalLookup

	// Retention, when set, bounds the live store: every intent expires
	// Retention after its last write (proposal, blocked decision, finished
	// execution), and a finished execution's idempotency claim twice that
	// after it finished, so the intent always goes first and can never be
	// executed again. An idempotency key is then remembered for
	// 2*Retention: a new intent reusing it later runs. Claims of
	// executions running or in doubt carry no TTL. The audit log keeps
	// everything regardless. Zero keeps intents and claims for good; else
	// at least a second. The buckets must allow per-value TTLs
	// (internal/natsstore's do). (Approvals expire with it: approval.Store.)
	Retention time.Duration

	// Quotas bound what each tenant holds in the live store (quota.go);
	// zero: no quotas.
	Quotas Quotas
	// PendingApprovals counts t's pending approval requests, for the
	// pending-approvals quota (internal/approval.Store.PendingCount); nil:
	// that quota is off.
	PendingApprovals func(ctx context.Context, t tenant.ID, now time.Time) (int, error)

	// MaxRecord is the largest record the store accepts, in bytes: its
	// NATS max_payload (natsstore.Store.MaxPayload; default
	// DefaultMaxRecord). Intents and outputs are bounded so that no record
	// exceeds it (RecordBudget); at least 2*RecordReserve.
	MaxRecord int64
}

// Gate is the one gate every side effect passes.
type Gate struct {
	cfg    Config
	quota  quotaBook // each tenant's usage, for the quotas
	shadow shadowState
}

// New returns a Gate. Every dependency is required: a missing one fails here,
// not at the first request.
func New(cfg Config) (*Gate, error) {
	switch {
	case cfg.Intents == nil, cfg.Idempotency == nil:
		return nil, errors.New("gate: intents and idempotency buckets are required")
	case cfg.Audit == nil:
		return nil, errors.New("gate: audit log is required")
	case cfg.Executors == nil:
		return nil, errors.New("gate: executors are required")
	case cfg.Switches == nil:
		return nil, errors.New("gate: kill switches are required")
	case cfg.Approvals == nil:
		return nil, errors.New("gate: approvals are required")
	case cfg.Retention != 0 && cfg.Retention < time.Second:
		return nil, fmt.Errorf("gate: retention %v: must be 0 or at least 1s", cfg.Retention)
	}
	switch {
	case cfg.MaxRecord == 0:
		cfg.MaxRecord = DefaultMaxRecord
	case cfg.MaxRecord < 2*RecordReserve:
		return nil, fmt.Errorf("gate: max record %d bytes: must be at least %d", cfg.MaxRecord, 2*RecordReserve)
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.Default()
	}
	if cfg.Policies == nil {
		cfg.Policies = staticPolicy{cfg.Policy}
	}
	if cfg.Actions == nil {
		cfg.Actions = action.Builtin()
	}
	switch {
	case cfg.Lease == 0:
		cfg.Lease = DefaultLease
	case cfg.Lease < 300*time.Millisecond:
		return nil, fmt.Errorf("gate: lease %v: must be at least 300ms", cfg.Lease)
	}
	switch {
	case cfg.ExecTimeout == 0:
		cfg.ExecTimeout = DefaultExecTimeout
	case cfg.ExecTimeout < 0:
		return nil, fmt.Errorf("gate: executor timeout %v: must be positive", cfg.ExecTimeout)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Quotas.PendingIntents < 0, cfg.Quotas.PendingApprovals < 0, cfg.Quotas.StoredBytes < 0, cfg.Quotas.Refresh < 0:
		return nil, fmt.Errorf("gate: quotas %+v: none may be negative", cfg.Quotas)
	case cfg.Quotas.Refresh == 0:
		cfg.Quotas.Refresh = DefaultQuotaRefresh
	}
	if cfg.Quotas.Now == nil {
		cfg.Quotas.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Allowlist = append([]string{}, cfg.Allowlist...) // never null in a recorded input
	slices.Sort(cfg.Allowlist)
	return &Gate{cfg: cfg, shadow: shadowState{tenants: map[string]*ShadowSummary{}, writers: make(chan struct{}, shadowWriters)}}, nil
}

// Auditor appends to a tenant's hash chain (internal/audit.Log).
type Auditor interface {
	Append(ctx context.Context, t tenant.ID, e audit.Entry) (contract.AuditRecord, error)
}

// SwitchReader reads the global and a tenant's kill switch.
type SwitchReader interface {
	Read(t tenant.ID) (global, tenantSwitch killswitch.Reading)
}

// Approvals opens, reads and consumes approvals (internal/approval).
type Approvals interface {
	Request(ctx context.Context, t tenant.ID, in contract.ActionIntent, proposer *auth.Principal, requestID string, now time.Time) error
	Read(ctx context.Context, t tenant.ID, intentID string) (approval.Reading, error)
	// Required is how many distinct approvals an intent of class needs in
	// t under the declared rules (0: none).
	Required(t tenant.ID, class string) int
	// Eligible reports why p may not approve in (nil if it may) under the
	// declared rules: role, tenant and grants.
	Eligible(t tenant.ID, in contract.ActionIntent, p *auth.Principal) error
	Consume(ctx context.Context, t tenant.ID, c approval.Consumption) error
	Decide(ctx context.Context, t tenant.ID, b approval.Ballot) (approval.Record, error)
}

// Meta is per-request context recorded in audit records.
type Meta struct {
	RequestID string
}

// View is an intent with what has happened to it.
type View struct {
	Intent       contract.ActionIntent     `json:"intent"`
	State        string                    `json:"state"`
	Preview      *contract.Decision        `json:"preview,omitempty"`
	LastDecision *contract.Decision        `json:"last_decision,omitempty"`
	Result       *contract.ExecutionResult `json:"result,omitempty"`
	// Request is a declared http action's request exactly as it will be
	// sent, each secret shown as its placeholder (action.Registration
	// Render): what an operator approves.
	Request *action.Rendered `json:"request,omitempty"`
}

// stored is the intents-bucket value.
type stored struct {
	Intent       contract.ActionIntent `json:"intent"`
	Preview      *contract.Decision    `json:"preview,omitempty"`
	LastDecision *contract.Decision    `json:"last_decision,omitempty"`
	// Final marks an intent whose execution finished under a retention:
	// the record expires and must never be rewritten without its TTL.
	Final bool `json:"final,omitempty"`
	// Approval marks an intent whose approval was requested when it was
	// proposed (the rules then asked for one): its decisions read the
	// approval record whatever the rules ask now.
	Approval bool `json:"approval,omitempty"`

	rev uint64 // the KV revision it was read at
}

// claim is the idempotency-ledger value.
type claim struct {
	IntentID   string    `json:"intent_id"`
	IntentHash string    `json:"intent_hash"`
	State      string    `json:"state"` // executing, succeeded, failed
	Node       string    `json:"node"`
	StartedAt  time.Time `json:"started_at"`
	// LeaseUntil is when a running execution's lease lapses unless its
	// node renews it (lease.go); zero once the execution finished.
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Lease is the renewing node's lease duration: the claim reads lapsed
	// one Lease after LeaseUntil (a margin for the nodes' clocks).
	Lease time.Duration `json:"lease,omitempty"`
	// Unaudited marks a finished execution whose outcome record could not
	// be appended; the next execute of the intent appends it.
	Unaudited bool `json:"unaudited,omitempty"`
	// Actor is who ran an Unaudited execution: its repaired record names
	// them (sweep.go).
	Actor string `json:"actor,omitempty"`
	// Decision is the allowing decision this execution ran under (kept
	// here, in the write that claims the key, instead of a separate write
	// of the intent).
	Decision *contract.Decision        `json:"decision,omitempty"`
	Result   *contract.ExecutionResult `json:"result,omitempty"`
}

// DecisionPayload is the audit payload of every record that carries a
// decision: replay recomputes Decision from Input.
type DecisionPayload struct {
	Input    Input             `json:"input"`
	Decision contract.Decision `json:"decision"`
}

// IntentID derives an intent's ID from its tenant and idempotency key, so a
// repeated proposal names the same intent on every node.
func IntentID(t tenant.ID, idempotencyKey string) string {
	sum := sha256.Sum256([]byte(t.String() + "\x00" + idempotencyKey))
	return "in_" + hex.EncodeToString(sum[:16])
}

// PolicySource says which bundle a tenant decides under (active.Set): the
// bundle and its hash, or, when the bundle in force cannot be used on
// this node, a nil bundle, the hash it should have and why (the decision
// denies: Input.PolicyUnavailable).
type PolicySource interface {
	For(t tenant.ID) (*policy.Bundle, string, error)
}

type staticPolicy struct{ b *policy.Bundle }

func (s staticPolicy) For(tenant.ID) (*policy.Bundle, string, error) { return s.b, s.b.Hash(), nil }

// input gathers a decision's input and the bundle to decide it under. Any
// store error fails closed: the caller returns it and nothing executes.
// requested says the intent's approval was requested when it was proposed
// (stored.Approval).
func (g *Gate) input(ctx context.Context, t tenant.ID, p *auth.Principal, in contract.ActionIntent, requested bool) (Input, *policy.Bundle, error) {
	global, ts := g.cfg.Switches.Read(t)
	appr := approval.Reading{Status: approval.StatusNone, Approvers: []string{}}
	// The approval is read when the rules ask for one now, and also when
	// they asked when the intent was proposed: a record opened under
	// stricter rules (an A0 read a tenant's rules once required to be
	// approved, and maybe denied) still binds its intent.
	if need := g.cfg.Approvals.Required(t, in.Class); need > 0 || requested {
		var err error
		if appr, err = g.cfg.Approvals.Read(ctx, t, in.ID); err != nil {
			return Input{}, nil, storeErr("read approval", err)
		}
		// The number the record froze, raised to what the rules ask now
		// (rules may have been raised since the request: fail closed).
		appr.Required = max(appr.Required, need)
		if appr.Status == approval.StatusApproved && g.cfg.Principals != nil {
			// A vote counts only while its approver may still approve
			// this intent: not revoked or expired, and still in a role,
			// tenant and grants the rules accept now.
			for _, id := range appr.Approvers {
				q, err := g.cfg.Principals.Principal(ctx, id)
				switch {
				case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, auth.ErrExpired):
					appr.Withdrawn = append(appr.Withdrawn, id)
				case err != nil:
					return Input{}, nil, storeErr("read an approver's credential", err)
				case g.cfg.Approvals.Eligible(t, in, q) != nil:
					appr.Withdrawn = append(appr.Withdrawn, id)
				}
			}
		}
	}
	bundle, hash, perr := g.cfg.Policies.For(t)
	unavailable := ""
	if perr != nil {
		unavailable = perr.Error()
	}
	return Input{
		Global:            global,
		TenantSwitch:      ts,
		Approval:          appr,
		Tenant:            t.String(),
		Intent:            in,
		Principal:         *p,
		PolicyHash:        hash,
		Allowlist:         g.cfg.Allowlist,
		Time:              g.cfg.Now().UTC(),
		AuditChain:        g.chainHealth(t),
		PolicyUnavailable: unavailable,
	}, bundle, nil
}

// chainHealth is why t's audit chain is not to be written to (Config.Chain),
// or "".
func (g *Gate) chainHealth(t tenant.ID) string {
	if g.cfg.Chain == nil {
		return ""
	}
	return g.cfg.Chain(t)
}

// admit is the one entry check of every gate method that acts for a
// principal: a valid tenant and an authenticated principal. The tenant
// grant is then checked, audited, by what each method decides (the
// decision's grant check, the proposer binding, approval eligibility);
// internal/access has authorized the operation before.
func admit(t tenant.ID, p *auth.Principal) error {
	if err := t.Check(); err != nil {
		return contract.Wrap(contract.CodeInvalidTenant, "a valid tenant is required", err)
	}
	if p == nil || p.ID == "" {
		return contract.Errorf(contract.CodeUnauthenticated, "authentication required")
	}
	return nil
}

func storeErr(op string, err error) error {
	return contract.Wrap(contract.CodeStoreUnavailable, "the durable store is unavailable; nothing was changed", fmt.Errorf("%s: %w", op, err))
}

// writeErr answers a failed write: it may have been stored (its
// acknowledgement can be what was lost), so the answer says only what is
// certain and what to do, never that nothing was changed.
func writeErr(op, certain string, err error) error {
	return contract.Wrap(contract.CodeStoreUnavailable, "the durable store failed to "+op+"; "+certain, fmt.Errorf("%s: %w", op, err))
}

// afterWrite restates a store failure met after a write: the write stands,
// so the read's "nothing was changed" would be false.
func afterWrite(err error, op, certain string) error {
	var ce *contract.Error
	if errors.As(err, &ce) && ce.Code == contract.CodeStoreUnavailable {
		return writeErr(op, certain, ce.Err)
	}
	return err
}

// What a caller may do after a failed write before any effect.
const (
	notRun       = "the action did not run; retrying is safe"
	retryPropose = "retry the same request (same idempotency key): it is answered from what was stored"
)

// Propose validates and stores an intent, audits intent.proposed with a
// preview decision, and returns it. A repeat of the same request (same
// idempotency key and content) returns the stored intent with created=false;
// a different request with a used key is a conflict.
func (g *Gate) Propose(ctx context.Context, t tenant.ID, p *auth.Principal, req contract.IntentRequest, meta Meta) (View, bool, error) {
	if err := admit(t, p); err != nil {
		return View{}, false, err
	}
	spec, ok := g.cfg.Actions.Lookup(req.Action)
	if !ok {
		return View{}, false, contract.Errorf(contract.CodeUnknownAction, "unknown action type %q", req.Action)
	}
	if err := tenant.ValidIdempotencyKey(req.IdempotencyKey); err != nil {
		return View{}, false, contract.Errorf(contract.CodeInvalid, "field \"/idempotency_key\": %v", err)
	}
	// A name an operator reads must be what runs: no control, bidi or
	// invisible character in the target or a parameter (one rule, for
	// every front end).
	if err := contract.CheckIntentText(req); err != nil {
		return View{}, false, err
	}
	// A declared action's params must match its schema, and its request
	// must render (what the policy and the operators will see): else the
	// proposal is refused, naming the field, and nothing is written. Only
	// for a principal granted the action: one that is not is refused
	// below, audited (access.denied), and learns nothing of the schema.
	// Rendered once: the check, and the view the proposer gets back.
	var request *action.Rendered
	if spec.Executor.Kind == action.HTTPTemplate && p.HasTenant(t.String()) && p.MayUse(spec.Type, spec.Class) {
		rd, err := spec.Render(req.Target, req.Params)
		if err != nil {
			var schemaErr *contract.Error // the params' schema check, naming the field
			if errors.As(err, &schemaErr) {
				return View{}, false, schemaErr
			}
			return View{}, false, contract.Errorf(contract.CodeInvalid, "%v", err)
		}
		request = &rd
	}
	in := contract.ActionIntent{
		// v1 for a V1 name (as before v2), v2 for a name only v2 allows.
		SchemaVersion:       contract.ActionNameVersion(spec.Type),
		ID:                  IntentID(t, req.IdempotencyKey),
		Tenant:              t.String(),
		Action:              spec.Type,
		Class:               spec.Class,
		Target:              req.Target,
		Params:              req.Params,
		IdempotencyKey:      req.IdempotencyKey,
		Justification:       req.Justification,
		Proposer:            p.ID,
		ExecuteWhenApproved: req.ExecuteWhenApproved,
		CreatedAt:           g.cfg.Now().UTC(),
	}
	key := tenant.IntentKey(t, in.ID)

	// A repeated proposal returns what is stored (and re-opens its approval
	// request if an earlier attempt stopped before it, unless execution
	// already started: under a retention its approval may have expired
	// first, and nothing is left to approve).
	if existing, err := g.load(ctx, t, in.ID); err == nil {
		if !sameRequest(existing.Intent, in) {
			return View{}, false, contract.Errorf(contract.CodeConflict, "idempotency key %q is already used by a different intent", req.IdempotencyKey)
		}
		v, err := g.view(ctx, t, existing)
		if err != nil {
			return View{}, false, err
		}
		if v.State == StateProposed || v.State == StateBlocked {
			if err := g.cfg.Approvals.Request(ctx, t, existing.Intent, p, meta.RequestID, g.cfg.Now().UTC()); err != nil {
				return View{}, false, writeErr("open the intent's approval request", "the intent is stored; "+retryPropose, err)
			}
		}
		return v, false, nil
	} else if !errors.Is(err, errNotFound) {
		return View{}, false, err
	}

	var err error
	if in.Hash, err = in.ComputeHash(); err != nil {
		return View{}, false, fmt.Errorf("propose: hash intent: %w", err)
	}
	input, bundle, err := g.input(ctx, t, p, in, false) // a new intent: no approval was requested yet
	if err != nil {
		return View{}, false, err
	}
	preview := Decide(input, bundle, g.cfg.Actions)
	// An intent too large to record is refused before anything is written
	// (also the refusal below would not fit).
	if err := g.checkIntentSize(DecisionPayload{input, preview}); err != nil {
		return View{}, false, err
	}

	// A principal without the tenant or the action may not even propose.
	if c, failed := failedCheck(preview, CheckGrant); failed {
		if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
			Kind: audit.KindAccessDenied, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
			Time: input.Time, Payload: DecisionPayload{input, preview},
		}); err != nil {
			return View{}, false, writeErr("record the refusal", "nothing was proposed", err)
		}
		return View{}, false, &contract.Error{Code: contract.CodeForbidden, Message: "principal may not propose this action in this tenant", Reasons: []string{c.Reason}}
	}

	// A new intent has no approval record: the input's number is what the rules ask.
	data, err := encodeValue(stored{Intent: in, Preview: &preview, Approval: input.Approval.Required > 0})
	if err != nil {
		return View{}, false, fmt.Errorf("propose: encode: %w", err)
	}
	// The tenant's quotas, before anything is written (quota.go).
	release, err := g.reserveQuota(ctx, t, int64(len(data)), input.Approval.Required > 0)
	if err != nil {
		return View{}, false, err
	}
	// Audit first: an intent is never stored without its proposal record.
	if _, err := g.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: audit.KindIntentProposed, CorrelationID: in.ID, Actor: p.ID, RequestID: meta.RequestID,
		Time: input.Time, Payload: DecisionPayload{input, preview},
	}); err != nil {
		release()
		return View{}, false, writeErr("record the proposal", "the intent was not stored; "+retryPropose, err)
	}
	if _, err := g.cfg.Intents.Put(ctx, key, data, kv.PutOptions{Create: true, TTL: g.cfg.Retention}); err != nil {
		release() // not stored by this call (or stored by a concurrent one, which counted it)
		if errors.Is(err, kv.ErrExists) {
			// Lost a race with an identical key: answer as a repeat.
			existing, lerr := g.load(ctx, t, in.ID)
			if lerr != nil {
				return View{}, false, afterWrite(lerr, "read back the intent a concurrent proposal stored", "its proposal is in the audit log; "+retryPropose)
			}
			if !sameRequest(existing.Intent, in) {
				return View{}, false, contract.Errorf(contract.CodeConflict, "idempotency key %q is already used by a different intent", req.IdempotencyKey)
			}
			v, err := g.view(ctx, t, existing)
			return v, false, afterWrite(err, "read back the intent a concurrent proposal stored", "its proposal is in the audit log; "+retryPropose)
		}
		return View{}, false, writeErr("store the intent", "its proposal may be in the audit log; "+retryPropose, err)
	}
	if err := g.cfg.Approvals.Request(ctx, t, in, p, meta.RequestID, input.Time); err != nil {
		return View{}, false, writeErr("open the intent's approval request", "the intent is stored; "+retryPropose, err)
	}
	g.cfg.Logger.InfoContext(ctx, "intent proposed", "tenant", t.String(), "intent", in.ID, "action", in.Action,
		"preview", preview.Verdict, "request_id", meta.RequestID)
	g.shadowed(ctx, t, input, preview, audit.KindIntentProposed, p.ID, meta.RequestID)
	return View{Intent: in, State: StateProposed, Preview: &preview, Request: request}, true, nil
}

// rendered is in's request when its action is a declared http action
// that renders, else nil.
func (g *Gate) rendered(in contract.ActionIntent) *action.Rendered {
	spec, ok := g.cfg.Actions.Lookup(in.Action)
	if !ok || spec.Executor.Kind != action.HTTPTemplate {
		return nil
	}
	rd, err := spec.Render(in.Target, in.Params)
	if err != nil {
		return nil
	}
	return &rd
}

// failedCheck returns the named check if it failed.
func failedCheck(d contract.Decision, name string) (contract.CheckResult, bool) {
	for _, c := range d.Checks {
		if c.Name == name {
			return c, c.Outcome == contract.Fail
		}
	}
	return contract.CheckResult{}, false
}

func sameRequest(a, b contract.ActionIntent) bool {
	return a.Action == b.Action && a.Target == b.Target && a.IdempotencyKey == b.IdempotencyKey && a.ExecuteWhenApproved == b.ExecuteWhenApproved &&
		a.Justification == b.Justification && a.Proposer == b.Proposer && mapsEqual(a.Params, b.Params)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

var errNotFound = contract.Errorf(contract.CodeNotFound, "intent not found")

func (g *Gate) load(ctx context.Context, t tenant.ID, id string) (stored, error) {
	if err := tenant.ValidIntentID(id); err != nil {
		return stored{}, errNotFound
	}
	e, err := g.cfg.Intents.Get(ctx, tenant.IntentKey(t, id))
	if errors.Is(err, kv.ErrNotFound) {
		return stored{}, g.NotFound()
	}
	if err != nil {
		return stored{}, storeErr("load intent", err)
	}
	s := stored{rev: e.Revision}
	if err := json.Unmarshal(e.Value, &s); err != nil {
		return stored{}, fmt.Errorf("load intent %s: decode: %w", id, err)
	}
	// Fail closed on a stored intent whose content no longer matches its hash.
	h, err := s.Intent.ComputeHash()
	if err != nil || h != s.Intent.Hash || s.Intent.Tenant != t.String() {
		return stored{}, contract.Errorf(contract.CodeConflict, "stored intent %s fails its integrity check", id)
	}
	return s, nil
}

// NotFound is the answer for an intent that is not stored, as Get gives
// it: a front end gives the same for an intent the caller may not see, so
// the answer does not reveal that it exists.
func (g *Gate) NotFound() error {
	if g.cfg.Retention != 0 {
		return contract.Errorf(contract.CodeNotFound, "intent not found: unknown, or expired (this server keeps an intent %s after its last change)", g.cfg.Retention)
	}
	return errNotFound
}

// Get returns an intent with its state, last decision and result.
func (g *Gate) Get(ctx context.Context, t tenant.ID, id string) (View, error) {
	if err := t.Check(); err != nil {
		return View{}, contract.Wrap(contract.CodeInvalidTenant, "a valid tenant is required", err)
	}
	s, err := g.load(ctx, t, id)
	if err != nil {
		return View{}, err
	}
	return g.view(ctx, t, s)
}

func (g *Gate) view(ctx context.Context, t tenant.ID, s stored) (View, error) {
	v := View{Intent: s.Intent, Preview: s.Preview, LastDecision: s.LastDecision, State: StateProposed, Request: g.rendered(s.Intent)}
	if s.LastDecision != nil && s.LastDecision.Verdict == contract.Deny {
		v.State = StateBlocked
	}
	c, _, err := g.claimOf(ctx, t, s.Intent.IdempotencyKey)
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return View{}, storeErr("load idempotency claim", err)
	default:
		v.State, v.Result = g.claimState(c), c.Result
		if c.Decision != nil {
			v.LastDecision = c.Decision
		}
		if needsRepair(c) {
			g.repairSeen(ctx, t, s.Intent.IdempotencyKey)
		}
	}
	return v, nil
}

func (g *Gate) claimOf(ctx context.Context, t tenant.ID, idem string) (claim, uint64, error) {
	e, err := g.cfg.Idempotency.Get(ctx, tenant.IdempotencyKey(t, idem))
	if err != nil {
		return claim{}, 0, err
	}
	var c claim
	if err := json.Unmarshal(e.Value, &c); err != nil {
		return claim{}, 0, fmt.Errorf("decode idempotency claim: %w", err)
	}
	return c, e.Revision, nil
}

// claimState maps a ledger claim to the caller-visible state: a claim still
// executing whose lease lapsed is in doubt, on every node alike.
func (g *Gate) claimState(c claim) string {
	switch {
	case c.State != StateExecuting:
		return c.State
	case c.live(g.cfg.Now()):
		return StateExecuting
	default:
		return StateInDoubt
	}
}
