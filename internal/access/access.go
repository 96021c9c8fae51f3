// Package access is the one place that answers "may principal P do
// operation O on tenant T": authentication (API key or verified client
// certificate), the limit of failed authentication (per key id with
// backoff, per source and a global backstop for keys naming no registered
// id; limit.go) and its aggregated audit (failaudit.go), the
// tenant grant, the operation policy (cedar, internal/policy), the rules of
// credential management (nobody mints more than they hold; global powers
// are the explicit system grant), and the audit of every refusal.
//
// It knows no transport: the REST front end (internal/api) calls it today,
// the MCP front end and the console call the same functions. Errors are
// *contract.Error values with stable codes; each front end maps them to its
// own status codes.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Audit kinds written by the access layer.
const (
	// KindCrossTenant: a principal addressed a tenant it is not granted
	// (recorded in the caller's own first tenant's chain).
	KindCrossTenant = "access.cross_tenant"
	// KindForbidden: an authenticated principal asked for an operation it
	// may not do (recorded in the tenant's chain, or the system chain).
	KindForbidden = "access.forbidden"
	// KindAuthFailed: a request with the key of a credential that awaits
	// consent (recorded in the system chain, without the secret, at once:
	// only the key's holder can cause it).
	KindAuthFailed = "auth.failed"
	// KindAuthFailures: the failed authentications (missing, malformed,
	// unknown, revoked or expired credentials) and the refusals of the
	// failure limit of one interval, aggregated per source and key id
	// (a FailureReport, in the system chain; see failaudit.go).
	KindAuthFailures = "auth.failures"
	// KindKeyCreated and KindKeyRevoked: credential management, recorded in
	// the chain of every tenant the credential holds (the system chain for
	// the system grant), so each tenant's operators see who can act in it.
	KindKeyCreated = "key.created"
	KindKeyRevoked = "key.revoked"
	// KindKeyConsented: a second admin consented to a credential that
	// awaited it (ConsentKey); recorded like a creation.
	KindKeyConsented = "key.consented"
)

// Authenticator resolves an API key to its principal (internal/auth.Keys).
type Authenticator interface {
	Authenticate(ctx context.Context, key string) (*auth.Principal, error)
}

// CertAuthenticator maps a verified client certificate's common name to
// its principal.
type CertAuthenticator interface {
	AuthenticateCert(ctx context.Context, commonName string) (*auth.Principal, error)
}

// KeyStore creates, lists, reads and revokes credentials (internal/auth.Keys).
type KeyStore interface {
	Create(ctx context.Context, req auth.CreateRequest) (string, auth.Principal, error)
	List(ctx context.Context) ([]auth.Principal, error)
	Lookup(ctx context.Context, principalID string) (auth.Principal, error)
	Revoke(ctx context.Context, principalID string) (auth.Principal, error)
	Consent(ctx context.Context, principalID, by string) (auth.Principal, error)
}

// ConsentRules say where keys able to approve wait for a second admin's
// consent (internal/approval.Rules).
type ConsentRules interface {
	ApproverKeysNeedConsent(t tenant.ID) bool
	// AnyApproverKeysNeedConsent: some tenant, or the default, asks it.
	AnyApproverKeysNeedConsent() bool
}

// Auditor appends to a tenant's chain (internal/audit.Log).
type Auditor interface {
	Append(ctx context.Context, t tenant.ID, e audit.Entry) (contract.AuditRecord, error)
}

// Config wires a Service.
type Config struct {
	Keys     Authenticator
	Certs    CertAuthenticator // nil: no client certificates
	KeyAdmin KeyStore          // nil: credential management is unavailable
	Policy   *policy.Bundle    // with no Policies, the bundle that authorizes operations (default: policy.Default())
	// Policies, when set, says which bundle authorizes a tenant's
	// operations (active.Set: the tenant's active bundle, else the
	// global one, else the node's); Policy is then unused.
	Policies PolicySource
	Audit    Auditor // nil: refusals are not audited (tests only)
	Now      func() time.Time
	// FailLimit is how many failed authentications naming no registered
	// key one source may make per minute before such attempts from it are
	// refused (default 20); see limit.go for the whole rule.
	FailLimit int
	// KeyFailLimit is how many failures against one registered key id (from
	// any source) start its backoff (default 5).
	KeyFailLimit int
	// GlobalFailBurst is the backstop: failures naming no registered key,
	// from all sources together, per minute (default 200).
	GlobalFailBurst int
	// MaxTracked bounds each of the per-key and per-source tables (default
	// 10000; least recently failed evicted).
	MaxTracked int
	// AuditInterval is how often failures are written as one auth.failures
	// record (default a minute); MaxAuditEntries bounds the (source, key id)
	// pairs itemized in one (default 256).
	AuditInterval   time.Duration
	MaxAuditEntries int
	// Actions are the action types a key may be granted by name (default
	// action.Builtin).
	Actions *action.Registry
	// ClassOf maps an action type to its class ("" if unknown); default:
	// Actions' ClassOf.
	ClassOf func(action string) string
	// Consent says which tenants' approver keys need a second admin's
	// consent; nil: none do.
	Consent ConsentRules
	// Rates are the rate limits of propose, execute and approval votes,
	// per principal and per tenant (ratelimit.go); nil: DefaultRates. A
	// Rate with PerSecond 0 is no limit.
	Rates *Rates
	// RateNow is the rate limits' clock (default time.Now): the wall
	// clock even where Now is replaced (an evidence run's stepping clock,
	// which a read would advance).
	RateNow func() time.Time
	Logger  *slog.Logger
}

// Service is the access layer.
type Service struct {
	cfg Config

	mu         sync.Mutex // guards limits, failLog, rates, rateLog, stop, done
	limits     *limiter
	failLog    failLog
	rates      *rateLimiter
	rateLog    rateLog
	stop, done chan struct{}
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Keys == nil {
		return nil, errors.New("access: a key registry is required")
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.Default()
	}
	if cfg.Policies == nil {
		cfg.Policies = staticPolicy{cfg.Policy}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RateNow == nil {
		cfg.RateNow = time.Now
	}
	if cfg.FailLimit <= 0 {
		cfg.FailLimit = defaultFailLimit
	}
	if cfg.KeyFailLimit <= 0 {
		cfg.KeyFailLimit = defaultKeyFailLimit
	}
	if cfg.GlobalFailBurst <= 0 {
		cfg.GlobalFailBurst = defaultGlobalBurst
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = defaultMaxTracked
	}
	if cfg.AuditInterval <= 0 {
		cfg.AuditInterval = defaultAuditInterval
	}
	if cfg.MaxAuditEntries <= 0 {
		cfg.MaxAuditEntries = defaultMaxAuditEntries
	}
	if cfg.Actions == nil {
		cfg.Actions = action.Builtin()
	}
	if cfg.ClassOf == nil {
		cfg.ClassOf = cfg.Actions.ClassOf
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rates := DefaultRates()
	if cfg.Rates != nil {
		rates = *cfg.Rates
	}
	for _, r := range []*Rate{&rates.Propose.Principal, &rates.Propose.Tenant, &rates.Execute.Principal, &rates.Execute.Tenant, &rates.Approve.Principal, &rates.Approve.Tenant} {
		if !r.Off() && r.Burst < 1 {
			return nil, fmt.Errorf("access: rate %g/s: the burst must be at least 1", r.PerSecond)
		}
	}
	return &Service{cfg: cfg, limits: newLimiter(cfg), failLog: failLog{max: cfg.MaxAuditEntries},
		rates: newRateLimiter(rates, cfg.MaxTracked), rateLog: rateLog{max: cfg.MaxAuditEntries}}, nil
}

// Meta is what a front end knows of a request, for the audit records of
// refusals: the request ID and, for REST, the method and route.
type Meta struct {
	RequestID string
	Method    string
	Route     string
}

// Credentials are what a caller presented: an API key, or the common name
// of a client certificate the transport verified, and the caller's source
// address (for the failed-authentication limit).
type Credentials struct {
	APIKey string
	CertCN string
	Source string
}

// Authenticate resolves credentials to a principal. Unknown, malformed,
// revoked and expired credentials are all CodeUnauthenticated; attempts the
// failed-authentication limit refuses are CodeRateLimited with a RetryAfter
// (the rule is in limit.go: a correct key is refused only while its own key
// id is under attack). Both are audited aggregated (auth.failures, never
// with the secret). A store failure is CodeStoreUnavailable and is counted
// against no one.
func (s *Service) Authenticate(ctx context.Context, c Credentials, meta Meta) (*auth.Principal, error) {
	now := s.cfg.Now()
	keyID := auth.KeyID(c.APIKey) // "" unless the key parses
	useCert := c.CertCN != "" && s.cfg.Certs != nil
	if !useCert {
		if wait := s.refusal(keyID, c.Source, now); wait > 0 {
			return nil, s.limited(ctx, c.Source, keyID, meta, wait)
		}
	}
	var p *auth.Principal
	var err error
	switch {
	case useCert:
		p, err = s.cfg.Certs.AuthenticateCert(ctx, c.CertCN)
	case c.APIKey != "":
		p, err = s.cfg.Keys.Authenticate(ctx, c.APIKey)
	default:
		err = errMissing
	}
	why := ""
	switch {
	case err == nil:
		if keyID != "" {
			s.mu.Lock()
			s.limits.keySucceeded(keyID)
			s.mu.Unlock()
		}
		return p, nil
	case errors.Is(err, errMissing):
		why = "missing"
	case errors.Is(err, auth.ErrExpired):
		why = "expired"
	case errors.Is(err, auth.ErrPendingConsent):
		// The holder has the secret: say why, and do not count it as a guess.
		s.audit(ctx, tenant.System, meta, KindAuthFailed, "", map[string]string{"source": c.Source, "reason": "awaiting consent", "key_id": keyID})
		return nil, contract.Errorf(contract.CodeUnauthenticated, "this key awaits a second admin's consent (POST /v1/keys/{id}/consent); it cannot be used before")
	case errors.Is(err, auth.ErrUnknownKey):
		why = "unknown or malformed"
	case errors.Is(err, auth.ErrUnauthenticated):
		why = "unknown, malformed or revoked"
	default:
		return nil, contract.Wrap(contract.CodeStoreUnavailable, "cannot check credentials right now", err)
	}
	// A failure names a registered key id when the key parses and the
	// registry did not call it unknown; any other counts against the source.
	named := keyID != "" && !errors.Is(err, auth.ErrUnknownKey) && !errors.Is(err, errMissing) && !useCert
	s.mu.Lock()
	if !named {
		if wait := s.limits.unknownBlocked(c.Source, now); wait > 0 {
			s.mu.Unlock()
			return nil, s.limited(ctx, c.Source, keyID, meta, wait)
		}
		s.limits.unknownFailed(c.Source, now)
	} else {
		s.limits.keyFailed(keyID, now)
	}
	r := s.note(now, c.Source, keyID, why, meta.Route, false)
	s.mu.Unlock()
	_ = s.writeReport(ctx, r)
	return nil, contract.Errorf(contract.CodeUnauthenticated, "valid credentials are required")
}

// refusal is how long an attempt is refused before any check: its key id is
// in backoff, or it names no key (missing, malformed) while its source or
// the backstop is exhausted. A key that parses is checked unless its own id
// is in backoff.
func (s *Service) refusal(keyID, source string, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keyID != "" {
		return s.limits.keyBlocked(keyID, now)
	}
	return s.limits.unknownBlocked(source, now)
}

// limited records a refused attempt and returns its error.
func (s *Service) limited(ctx context.Context, source, keyID string, meta Meta, wait time.Duration) error {
	s.mu.Lock()
	r := s.note(s.cfg.Now(), source, keyID, "rate_limited", meta.Route, true)
	s.mu.Unlock()
	_ = s.writeReport(ctx, r)
	e := contract.Errorf(contract.CodeRateLimited, "too many failed authentication attempts; try again later")
	e.RetryAfter = wait
	return e
}

// note adds an attempt to the pending report and returns the report of the
// interval that has passed, if any, to be written (outside the lock).
func (s *Service) note(now time.Time, source, keyID, reason, route string, limited bool) *FailureReport {
	var due *FailureReport
	if s.failLog.due(now, s.cfg.AuditInterval) {
		due = s.failLog.take(now)
	}
	s.failLog.note(now, source, keyID, reason, route, limited)
	return due
}

var errMissing = errors.New("no credentials")

// Request asks whether Principal may do Operation (policy.Op*) on Tenant;
// a zero Tenant asks for a system operation.
type Request struct {
	Principal *auth.Principal
	Operation string
	Tenant    tenant.ID
	Meta      Meta
}

// ErrNotFound is how another tenant's state looks to a caller: the same
// answer as for a tenant or object that does not exist.
var ErrNotFound = contract.Errorf(contract.CodeNotFound, "not found")

// Authorize answers req: nil, or a *contract.Error (not_found for a tenant
// the principal is not granted, audited in the caller's own chain and
// never in the other's; forbidden for an operation the policy denies,
// audited in the tenant's chain or the system chain; rate_limited with a
// RetryAfter when an authorized propose, execute or vote exceeds its
// principal's or its tenant's rate, audited aggregated: ratelimit.go).
func (s *Service) Authorize(ctx context.Context, req Request) error {
	p := req.Principal
	if p == nil || p.ID == "" {
		return contract.Errorf(contract.CodeUnauthenticated, "valid credentials are required")
	}
	if !req.Tenant.IsZero() && !p.HasTenant(req.Tenant.String()) {
		// In the caller's own first tenant's chain (the system chain for a
		// principal holding only the system grant).
		own, err := tenant.Parse(firstTenant(p))
		if err != nil {
			own = tenant.System
		}
		s.audit(ctx, own, req.Meta, KindCrossTenant, p.ID, map[string]string{"requested_tenant": req.Tenant.String()})
		return ErrNotFound
	}
	res := s.authorize(req)
	if res.Allowed {
		return s.rateLimit(ctx, req)
	}
	detail := map[string]string{"operation": req.Operation, "role": p.Role}
	if len(res.Errors) > 0 {
		detail["policy_errors"] = strings.Join(res.Errors, "; ")
	}
	scope := req.Tenant
	if scope.IsZero() {
		scope = tenant.System
	}
	s.audit(ctx, scope, req.Meta, KindForbidden, p.ID, detail)
	if req.Operation == policy.OpReadTenantAudit {
		return contract.Errorf(contract.CodeForbidden, "the tenant's whole audit (export, verify) is for operators, admins and auditors; role %s reads the records of its own intents with GET /v1/tenants/{tenant}/audit", p.Role)
	}
	if req.Tenant.IsZero() && !p.System() && p.Role == auth.RoleAdmin {
		return contract.Errorf(contract.CodeForbidden, "%s is a global power: it needs a key granted tenant %q", strings.ReplaceAll(req.Operation, "_", " "), auth.SystemGrant)
	}
	return contract.Errorf(contract.CodeForbidden, "role %s may not %s", p.Role, strings.ReplaceAll(req.Operation, "_", " "))
}

// PolicySource says which bundle a tenant is governed by (active.Set); a
// bundle that cannot be used on this node is an error, and the operation
// is refused.
type PolicySource interface {
	For(t tenant.ID) (*policy.Bundle, string, error)
}

type staticPolicy struct{ b *policy.Bundle }

func (s staticPolicy) For(tenant.ID) (*policy.Bundle, string, error) { return s.b, s.b.Hash(), nil }

// authorize asks the operation policy of the bundle governing req.Tenant:
// the global one (tenant.System) for a global operation and for
// activate_policy (see policy.OpActivatePolicy). A bundle this node
// cannot use denies, naming why.
func (s *Service) authorize(req Request) policy.Result {
	scope := req.Tenant
	if scope.IsZero() || req.Operation == policy.OpActivatePolicy {
		scope = tenant.System
	}
	b, _, err := s.cfg.Policies.For(scope)
	if err != nil {
		return policy.Result{Errors: []string{err.Error()}}
	}
	p := req.Principal
	return policy.Authorize(b, policy.OpRequest{
		PrincipalID: p.ID, Role: p.Role, Granted: p.Tenants, Operation: req.Operation, Tenant: req.Tenant.String(),
	})
}

// Scope is how much of a tenant a principal reads: all of it, or only
// what it owns (Owner: its principal ID, the proposer of its intents).
type Scope struct {
	Owner string // "": the whole tenant
}

// Whole reports whether the scope is the whole tenant.
func (sc Scope) Whole() bool { return sc.Owner == "" }

// Covers reports whether the scope includes what owner owns (an intent's
// proposer).
func (sc Scope) Covers(owner string) bool { return sc.Owner == "" || sc.Owner == owner }

// ReadScope answers, without auditing (it refuses nothing), how much of
// req.Tenant req.Principal reads: the whole tenant when req.Operation (a
// tenant-wide read: policy.OpReadTenantIntents, policy.OpReadTenantAudit)
// is permitted, else only what it owns. A front end asks it after
// Authorize allowed the route's own-scope operation (read_intent,
// read_audit) and shows what the scope covers; an object outside it is
// refused with AuthorizeOwned.
func (s *Service) ReadScope(req Request) Scope {
	p := req.Principal
	if p == nil || p.ID == "" {
		return Scope{Owner: "\x00nobody"} // covers no proposer
	}
	if !req.Tenant.IsZero() && p.HasTenant(req.Tenant.String()) && s.authorize(req).Allowed {
		return Scope{}
	}
	return Scope{Owner: p.ID}
}

// AuthorizeOwned authorizes reading one object owned by owner (an intent,
// by its proposer): nil when req.Principal owns it or req.Operation (the
// tenant-wide read) is permitted; else ErrNotFound, the answer for an
// object that does not exist (its existence is not revealed), audited as
// access.forbidden in the tenant's chain.
func (s *Service) AuthorizeOwned(ctx context.Context, req Request, owner string) error {
	if s.ReadScope(req).Covers(owner) {
		return nil
	}
	p := req.Principal
	s.audit(ctx, req.Tenant, req.Meta, KindForbidden, p.ID, map[string]string{"operation": req.Operation, "role": p.Role,
		"why": "not the principal's own; the tenant's whole view is for operators, admins and auditors"})
	return ErrNotFound
}

// firstTenant is the principal's first real tenant ("" if it holds none).
func firstTenant(p *auth.Principal) string {
	for _, t := range p.Tenants {
		if t != auth.SystemGrant {
			return t
		}
	}
	return ""
}

// audit records a refusal; a failure to audit is logged (a refusal stands
// either way).
func (s *Service) audit(ctx context.Context, t tenant.ID, meta Meta, kind, actor string, detail map[string]string) {
	if err := s.appendRecord(ctx, t, meta, kind, actor, detail); err != nil {
		s.cfg.Logger.ErrorContext(ctx, "audit access event", "kind", kind, "err", err)
	}
}

func (s *Service) appendRecord(ctx context.Context, t tenant.ID, meta Meta, kind, actor string, detail map[string]string) error {
	if s.cfg.Audit == nil {
		return nil
	}
	payload := map[string]string{"method": meta.Method, "route": meta.Route}
	maps.Copy(payload, detail)
	if actor == "" {
		actor = "anonymous"
	}
	_, err := s.cfg.Audit.Append(ctx, t, audit.Entry{
		Kind: kind, CorrelationID: meta.RequestID, Actor: actor, RequestID: meta.RequestID, Time: s.cfg.Now(), Payload: payload,
	})
	return err
}

// chainsOf are the chains a credential's changes are recorded in: each of
// its tenants, and the system chain for the system grant.
func chainsOf(p *auth.Principal) []tenant.ID {
	var out []tenant.ID
	for _, t := range p.Tenants {
		if t == auth.SystemGrant {
			out = append(out, tenant.System)
			continue
		}
		if id, err := tenant.Parse(t); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// CreateKey creates a credential for caller: caller must be an admin
// allowed to manage keys in every tenant of req (the system grant for the
// system tenant), and req may hold no tenant, role or action beyond the
// caller's own. The creation is audited in the chain of every tenant the
// new key holds. The key string is returned once.
func (s *Service) CreateKey(ctx context.Context, caller *auth.Principal, req auth.CreateRequest, meta Meta) (string, auth.Principal, error) {
	if err := req.ValidateFor(s.cfg.Actions); err != nil {
		return "", auth.Principal{}, contract.Errorf(contract.CodeInvalid, "%v", err)
	}
	if err := s.mayManage(ctx, caller, req.Tenants, meta); err != nil {
		return "", auth.Principal{}, err
	}
	ks, err := s.keyStore()
	if err != nil {
		return "", auth.Principal{}, err
	}
	if err := caller.CanGrant(req, s.cfg.ClassOf); err != nil {
		s.audit(ctx, s.chainFor(caller, req.Tenants), meta, KindForbidden, caller.ID, map[string]string{"operation": policy.OpManageKeys, "role": caller.Role, "why": err.Error()})
		return "", auth.Principal{}, contract.Errorf(contract.CodeForbidden, "you may not create this key: %v", err)
	}
	req.CreatedBy = caller.ID
	req.PendingConsent = s.needsConsent(req)
	key, p, err := ks.Create(ctx, req)
	if err != nil {
		return "", auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "the key could not be stored", err)
	}
	if err := s.recordChange(ctx, &p, meta, KindKeyCreated, caller.ID); err != nil {
		// A credential nobody can see being created must not exist: undo it.
		if _, rerr := ks.Revoke(context.WithoutCancel(ctx), p.ID); rerr != nil {
			s.cfg.Logger.ErrorContext(ctx, "revoke an unaudited key", "key", p.ID, "err", rerr)
			return "", auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable,
				fmt.Sprintf("key %s was created but neither audited nor revoked; revoke it", p.ID), errors.Join(err, rerr))
		}
		return "", auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "the key's creation could not be audited; it was revoked, try again", err)
	}
	return key, p, nil
}

// needsConsent reports whether a key req describes waits for a second
// admin's consent: it can approve (operator, admin) and one of its tenants'
// approval rules ask for consent to such keys.
func (s *Service) needsConsent(req auth.CreateRequest) bool {
	if s.cfg.Consent == nil || !approval.CanApprove(req.Role) {
		return false
	}
	for _, t := range req.Tenants {
		if t == auth.SystemGrant && s.cfg.Consent.AnyApproverKeysNeedConsent() {
			// A system admin manages every tenant's keys and so can
			// consent anywhere: it is held back wherever consent is asked.
			return true
		}
		if id, err := tenant.Parse(t); err == nil && s.cfg.Consent.ApproverKeysNeedConsent(id) {
			return true
		}
	}
	return false
}

// maxLineage bounds how far ConsentKey follows a chain of creators.
const maxLineage = 16

// creators returns the owners of the principals that created p, nearest
// first, up to a key created on the store directly ("cli") or one no longer
// registered (its ID stands in for its owner).
func creators(ctx context.Context, ks KeyStore, p auth.Principal) ([]string, error) {
	var out []string
	for id := p.CreatedBy; id != "" && id != "cli" && len(out) < maxLineage; {
		q, err := ks.Lookup(ctx, id)
		if errors.Is(err, auth.ErrUnauthenticated) {
			return append(out, id), nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, q.OwnerID())
		id = q.CreatedBy
	}
	return out, nil
}

// Consent is a second admin's consent to a key that awaits it.
type Consent struct {
	PrincipalID string // the key awaiting consent
	Reason      string // why (required; audited)
}

// ConsentKey gives caller's consent to a key that awaits it: caller must
// manage the key (hold all its tenants, as for revoking it) and be a
// different person from both the key's owner and its creator's owner, so
// that keys able to approve in such a tenant always had two admins. The
// consent is audited in the chain of each of the key's tenants; if that
// record cannot be written the key is revoked (a credential nobody can see
// being enabled must not act).
func (s *Service) ConsentKey(ctx context.Context, caller *auth.Principal, c Consent, meta Meta) (auth.Principal, error) {
	if strings.TrimSpace(c.Reason) == "" || len(c.Reason) > 1024 {
		return auth.Principal{}, contract.Errorf(contract.CodeInvalid, "field \"/reason\": required, at most 1024 bytes")
	}
	ks, target, err := s.managedKey(ctx, caller, c.PrincipalID, meta)
	if err != nil {
		return auth.Principal{}, err
	}
	if !target.PendingConsent || target.Revoked {
		return auth.Principal{}, contract.Errorf(contract.CodeConflict, "key %s awaits no consent", target.ID)
	}
	// The consent is a second person's only if the consenting key is
	// neither the key's creator's nor its owner's, and was not made by
	// either of them (an admin minting a "second admin" for itself).
	made, err := creators(ctx, ks, target)
	if err != nil {
		return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "cannot read the key's creator", err)
	}
	theirs, err := creators(ctx, ks, *caller)
	if err != nil {
		return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "cannot read your key's creator", err)
	}
	creatorOwner := target.CreatedBy
	if len(made) > 0 {
		creatorOwner = made[0]
	}
	owner := caller.OwnerID()
	if owner == creatorOwner || owner == target.OwnerID() || slices.Contains(theirs, creatorOwner) || slices.Contains(theirs, target.OwnerID()) {
		s.audit(ctx, s.chainFor(caller, target.Tenants), meta, KindForbidden, caller.ID, map[string]string{"operation": "consent_key", "key": target.ID,
			"why": "the consenting key is, or was created by, the key's creator or owner", "consenter_created_by": strings.Join(theirs, ",")})
		return auth.Principal{}, contract.Errorf(contract.CodeSelfApproval, "consent must come from another person than the key's creator (%s) and owner (%s), with a key neither of them created", creatorOwner, target.OwnerID())
	}
	p, err := ks.Consent(ctx, target.ID, caller.ID)
	switch {
	case errors.Is(err, auth.ErrNotPending):
		return auth.Principal{}, contract.Errorf(contract.CodeConflict, "key %s awaits no consent", target.ID)
	case errors.Is(err, auth.ErrUnauthenticated):
		return auth.Principal{}, ErrNotFound
	case err != nil:
		return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "cannot record the consent", err)
	}
	if err := s.recordChange(ctx, &p, meta, KindKeyConsented, caller.ID, "reason", c.Reason,
		"consenter_owner", owner, "consenter_created_by", caller.CreatedBy, "consenter_lineage", strings.Join(theirs, ",")); err != nil {
		if _, rerr := ks.Revoke(context.WithoutCancel(ctx), p.ID); rerr != nil {
			s.cfg.Logger.ErrorContext(ctx, "revoke a key whose consent is unaudited", "key", p.ID, "err", rerr)
			return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable,
				fmt.Sprintf("key %s was enabled but its consent was neither audited nor the key revoked; revoke it", p.ID), errors.Join(err, rerr))
		}
		return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, fmt.Sprintf("the consent could not be audited; key %s was revoked, create it again", p.ID), err)
	}
	return p, nil
}

// managedKey returns a credential caller may manage (it holds every tenant
// of it) and the store it is in; any other reads as not found, audited.
func (s *Service) managedKey(ctx context.Context, caller *auth.Principal, principalID string, meta Meta) (KeyStore, auth.Principal, error) {
	if err := s.Authorize(ctx, Request{Principal: caller, Operation: policy.OpKeyManagement, Meta: meta}); err != nil {
		return nil, auth.Principal{}, err
	}
	ks, err := s.keyStore()
	if err != nil {
		return nil, auth.Principal{}, err
	}
	target, err := ks.Lookup(ctx, principalID)
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return nil, auth.Principal{}, ErrNotFound
	case err != nil:
		return nil, auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "cannot read the key", err)
	case !caller.Manages(&target, s.cfg.ClassOf):
		s.audit(ctx, s.chainFor(caller, target.Tenants), meta, KindForbidden, caller.ID, map[string]string{"operation": policy.OpManageKeys, "role": caller.Role, "key": principalID})
		return nil, auth.Principal{}, ErrNotFound
	}
	if err := s.mayManage(ctx, caller, target.Tenants, meta); err != nil {
		return nil, auth.Principal{}, err
	}
	return ks, target, nil
}

func (s *Service) keyStore() (KeyStore, error) {
	if s.cfg.KeyAdmin == nil {
		return nil, contract.Errorf(contract.CodeStoreUnavailable, "key management is not available on this node")
	}
	return s.cfg.KeyAdmin, nil
}

// mayManage authorizes manage_keys on each tenant (System for the system
// grant); a tenant the caller does not hold reads as not found.
func (s *Service) mayManage(ctx context.Context, caller *auth.Principal, tenants []string, meta Meta) error {
	if caller == nil || caller.ID == "" {
		return contract.Errorf(contract.CodeUnauthenticated, "valid credentials are required")
	}
	for _, t := range tenants {
		req := Request{Principal: caller, Operation: policy.OpManageKeys, Meta: meta}
		if t != auth.SystemGrant {
			id, err := tenant.Parse(t)
			if err != nil {
				return contract.Wrap(contract.CodeInvalidTenant, "tenant must match [a-z0-9][a-z0-9-]{0,62}", err)
			}
			req.Tenant = id
			if caller.System() && !caller.HasTenant(t) {
				// A system admin manages every tenant's keys: the grant it
				// holds is authorized on the system resource.
				req.Tenant = tenant.ID{}
			}
		}
		if err := s.Authorize(ctx, req); err != nil {
			return err
		}
	}
	return nil
}

// chainFor is where a refusal about tenants is recorded: the first of them
// the caller holds, else the system chain.
func (s *Service) chainFor(caller *auth.Principal, tenants []string) tenant.ID {
	for _, t := range tenants {
		if caller.HasTenant(t) {
			if id, err := tenant.Parse(t); err == nil {
				return id
			}
		}
	}
	return tenant.System
}

// recordChange audits a credential change in each of its tenants' chains;
// unlike a refusal's record, a failure is returned: the change's record is
// the trace operators rely on.
func (s *Service) recordChange(ctx context.Context, p *auth.Principal, meta Meta, kind, actor string, extra ...string) error {
	detail := map[string]string{"key": p.ID, "name": p.Name, "role": p.Role, "owner": p.Owner, "created_by": p.CreatedBy,
		"tenants": strings.Join(p.Tenants, ","), "actions": strings.Join(p.Actions, ",")}
	if p.PendingConsent {
		detail["pending_consent"] = "true"
	}
	if p.ConsentedBy != "" {
		detail["consented_by"] = p.ConsentedBy
	}
	for i := 0; i+1 < len(extra); i += 2 {
		detail[extra[i]] = extra[i+1]
	}
	var errs []error
	for _, t := range chainsOf(p) {
		if err := s.appendRecord(ctx, t, meta, kind, actor, detail); err != nil {
			errs = append(errs, fmt.Errorf("audit %s in %s: %w", kind, t, err))
		}
	}
	return errors.Join(errs...)
}

// ListKeys returns the credentials caller manages (every tenant they hold
// is one of the caller's), never a secret.
func (s *Service) ListKeys(ctx context.Context, caller *auth.Principal, meta Meta) ([]auth.Principal, error) {
	if err := s.Authorize(ctx, Request{Principal: caller, Operation: policy.OpKeyManagement, Meta: meta}); err != nil {
		return nil, err
	}
	ks, err := s.keyStore()
	if err != nil {
		return nil, err
	}
	all, err := ks.List(ctx)
	if err != nil {
		return nil, contract.Wrap(contract.CodeStoreUnavailable, "cannot list keys", err)
	}
	out := []auth.Principal{}
	for i := range all {
		if caller.Manages(&all[i], s.cfg.ClassOf) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// RevokeKey revokes a credential the caller manages; any other reads as
// not found. The revocation is audited in the chain of each of its tenants.
func (s *Service) RevokeKey(ctx context.Context, caller *auth.Principal, principalID string, meta Meta) (auth.Principal, error) {
	ks, _, err := s.managedKey(ctx, caller, principalID, meta)
	if err != nil {
		return auth.Principal{}, err
	}
	p, err := ks.Revoke(ctx, principalID)
	if errors.Is(err, auth.ErrUnauthenticated) {
		return auth.Principal{}, ErrNotFound
	}
	if err != nil {
		return auth.Principal{}, contract.Wrap(contract.CodeStoreUnavailable, "cannot revoke the key", err)
	}
	if err := s.recordChange(ctx, &p, meta, KindKeyRevoked, caller.ID); err != nil {
		return p, contract.Wrap(contract.CodeStoreUnavailable, fmt.Sprintf("key %s is revoked, but its revocation could not be audited", p.ID), err)
	}
	return p, nil
}
