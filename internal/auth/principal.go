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
	"slices"
	"time"
)

// Roles.
const (
	RoleAgent    = "agent"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool { return r == RoleAgent || r == RoleOperator || r == RoleAdmin }

// Principal is an authenticated caller. It is recorded in every decision
// input, so its fields are plain data.
type Principal struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	Tenants []string `json:"tenants"`
	// Actions grants action types ("fs.read"), whole classes ("A0") or
	// everything ("*").
	Actions   []string  `json:"actions"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// CertCN is set for principals authenticated by a client certificate.
	CertCN string `json:"cert_cn,omitempty"`
	// Revoked is shown in key listings; a revoked principal never
	// authenticates.
	Revoked bool `json:"revoked,omitempty"`
}

// HasTenant reports whether p may act in tenant t.
func (p *Principal) HasTenant(t string) bool { return slices.Contains(p.Tenants, t) }

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
