// Package auth authenticates API callers and describes what they may do.
//
// An API key looks like exo_<id>_<secret>: the id is public and names the
// registry entry; the secret carries 256 bits from crypto/rand and is stored
// only as its SHA-256, compared in constant time. A key resolves to a
// Principal: a name, a role, the tenants it may act in and the actions or
// action classes it may use.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Roles, by power: agent < auditor < operator < admin. An auditor reads
// a tenant's intents, approvals, kill switch and whole audit and does
// nothing else (internal/policy/default.cedar says what each may do).
const (
	RoleAgent    = "agent"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
	RoleAuditor  = "auditor"
)

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool { return roleRank(r) > 0 }

// Roles lists the roles, least powerful first.
func Roles() []string { return []string{RoleAgent, RoleAuditor, RoleOperator, RoleAdmin} }

// roleRank orders roles by power: a principal may grant a role up to its
// own. An auditor sees more than an agent (the tenant's whole audit) and
// may do less than an operator (it only reads), so it sits between them:
// an operator's rank covers an auditor key, an auditor's never an
// operator's or an admin's. (Only admins manage keys at all: the policy's
// manage_keys.)
func roleRank(r string) int {
	switch r {
	case RoleAgent:
		return 1
	case RoleAuditor:
		return 2
	case RoleOperator:
		return 3
	case RoleAdmin:
		return 4
	}
	return 0
}

// SystemGrant is the tenant grant that holds the global powers (the global
// kill switch, system-wide key management, metrics): a key created with
// --tenant system. No role implies it.
const SystemGrant = "system"

// Principal is an authenticated caller. It is recorded in every decision
// input, so its fields are plain data.
type Principal struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	Tenants []string `json:"tenants"`
	// Actions grants action types (fs.read), whole classes (A0) or
	// everything ("*").
	Actions   []string  `json:"actions"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Owner is the person (or system) the credential belongs to: four eyes
	// counts distinct owners, so two keys of one person are one approver.
	// Empty on keys created before owners existed: their ID stands in.
	Owner string `json:"owner,omitempty"`
	// CreatedBy is the principal that created the credential ("cli" for
	// the store-direct bootstrap command).
	CreatedBy string `json:"created_by,omitempty"`
	// CertCN is set for principals authenticated by a client certificate.
	CertCN string `json:"cert_cn,omitempty"`
	// Revoked is shown in key listings; a revoked principal never
	// authenticates.
	Revoked bool `json:"revoked,omitempty"`
	// PendingConsent: the credential can approve and its tenant's approval
	// rules ask for a second admin's consent to such keys; it does not
	// authenticate until an admin other than its creator's owner and its
	// own owner consents (access.Service.ConsentKey). ConsentedBy names
	// that admin once given.
	PendingConsent bool   `json:"pending_consent,omitempty"`
	ConsentedBy    string `json:"consented_by,omitempty"`
}

// HasTenant reports whether p may act in tenant t.
func (p *Principal) HasTenant(t string) bool { return slices.Contains(p.Tenants, t) }

// System reports whether p holds the explicit system grant.
func (p *Principal) System() bool { return p.HasTenant(SystemGrant) }

// OwnerID is who p belongs to for four eyes: its Owner, or its own ID for a
// key that predates owners.
func (p *Principal) OwnerID() string {
	if p.Owner != "" {
		return "owner:" + p.Owner
	}
	return p.ID
}

// Covers reports whether p's action grants include grant (a type, a class
// or "*"): "*" covers everything, a class covers itself and its types, a
// type only itself. classOf maps an action type to its class ("" if
// unknown).
func (p *Principal) Covers(grant string, classOf func(string) string) bool {
	for _, a := range p.Actions {
		switch {
		case a == "*", a == grant:
			return true
		case grant == "*":
		case classOf(grant) != "" && a == classOf(grant):
			return true
		}
	}
	return false
}

// CanGrant reports, and explains when not, whether p may create a
// credential holding req's tenants, role and actions: never more than p
// holds itself. A system principal may grant any tenant; the system grant
// itself only a system principal holds.
func (p *Principal) CanGrant(req CreateRequest, classOf func(string) string) error {
	if roleRank(req.Role) > roleRank(p.Role) {
		return fmt.Errorf("role %s is above your own (%s)", req.Role, p.Role)
	}
	if !p.ExpiresAt.IsZero() && (req.ExpiresAt.IsZero() || req.ExpiresAt.After(p.ExpiresAt)) {
		return fmt.Errorf("the key would outlive your own, which expires at %s", p.ExpiresAt.Format(time.RFC3339))
	}
	for _, t := range req.Tenants {
		if !p.HasTenant(t) && !(p.System() && t != SystemGrant) {
			return fmt.Errorf("tenant %s is not granted to you", t)
		}
	}
	for _, a := range req.Actions {
		if !p.Covers(a, classOf) {
			return fmt.Errorf("action grant %s is beyond your own grants %v", a, p.Actions)
		}
	}
	return nil
}

// Manages reports whether p, an admin, may see and change the credential
// q: q holds nothing p could not have granted (tenants p holds, or any
// tenant for a system admin except the system grant, which it must hold
// itself; a role no higher; actions p's grants cover).
func (p *Principal) Manages(q *Principal, classOf func(string) string) bool {
	if p.Role != RoleAdmin || roleRank(q.Role) > roleRank(p.Role) {
		return false
	}
	for _, t := range q.Tenants {
		if !p.HasTenant(t) && !(p.System() && t != SystemGrant) {
			return false
		}
	}
	for _, a := range q.Actions {
		if !p.Covers(a, classOf) {
			return false
		}
	}
	return true
}

// MayUse reports whether p is granted action type typ of class class.
func (p *Principal) MayUse(typ, class string) bool {
	for _, a := range p.Actions {
		if a == "*" || a == typ || a == class {
			return true
		}
	}
	return false
}

// Expired reports whether p's key has expired at now.
func (p *Principal) Expired(now time.Time) bool {
	return !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt)
}

// Errors callers branch on.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrExpired         = errors.New("api key expired")
	// ErrPendingConsent is a credential that awaits a second admin's
	// consent; it is an ErrUnauthenticated.
	ErrPendingConsent = fmt.Errorf("%w: the key awaits a second admin's consent", ErrUnauthenticated)
	// ErrUnknownKey is a presented key that is malformed or names no
	// registered key id; it is an ErrUnauthenticated. The access layer
	// counts it against the source, not against a key id (a key id is
	// public; which one exists says nothing of a secret).
	ErrUnknownKey = fmt.Errorf("%w: no such key", ErrUnauthenticated)
	// ErrNotPending: a consent to a credential that awaits none.
	ErrNotPending = errors.New("the key awaits no consent")
)

type ctxKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal carried by ctx, or ErrUnauthenticated.
func FromContext(ctx context.Context) (*Principal, error) {
	p, ok := ctx.Value(ctxKey{}).(*Principal)
	if !ok || p == nil || p.ID == "" {
		return nil, ErrUnauthenticated
	}
	return p, nil
}
