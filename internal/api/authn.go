package api

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Audit kinds written by the boundary.
const (
	// KindCrossTenant: a principal addressed a tenant it is not granted
	// (recorded in the caller's own first tenant's chain).
	KindCrossTenant = "access.cross_tenant"
	// KindForbidden: an authenticated principal asked for an operation its
	// role does not allow (recorded in the tenant's chain, or the system chain).
	KindForbidden = "access.forbidden"
	// KindAuthFailed: a request with missing, malformed, unknown, revoked or
	// expired credentials (recorded in the system chain, without the secret).
	KindAuthFailed = "auth.failed"
)

const codeRateLimited = "rate_limited"

// Failed-authentication rate limit per source address.
const (
	failWindow       = time.Minute
	defaultFailLimit = 20
)

var errNotFound = contract.Errorf(contract.CodeNotFound, "not found")

// guard is the boundary: tenant validation (400, before any store access),
// rate limit of failed authentication per source (429), authentication by
// client certificate or bearer key (401), tenant grant (404, never revealing
// another tenant), and the operation's authorization by the cedar policy
// (403). Every refusal after authentication, and every failed
// authentication, is audited.
func (s *Server) guard(r *http.Request, ri *reqInfo, op string) error {
	if raw := r.PathValue("tenant"); raw != "" || strings.Contains(r.Pattern, "{tenant}") {
		t, err := tenant.Parse(raw)
		if err != nil {
			return contract.Wrap(contract.CodeInvalidTenant, "tenant must match [a-z0-9][a-z0-9-]{0,62}", err)
		}
		ri.tenant = t
	}
	if op == "" {
		return nil
	}
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		// Fail fast: with the store down every read and write would wait
		// for its timeout, and none could be persisted or audited.
		return contract.Errorf(contract.CodeStoreUnavailable, "the durable store is not ready; nothing was changed")
	}
	src := source(r)
	if s.fails.blocked(src, s.now(), s.failLimit()) {
		return contract.Errorf(codeRateLimited, "too many failed authentication attempts from this address; try again later")
	}
	p, why, err := s.authenticate(r)
	if err != nil {
		return err // the store is unavailable: not the caller's failure
	}
	if p == nil {
		s.fails.fail(src, s.now())
		s.auditSystem(r, ri, KindAuthFailed, "", map[string]string{"source": src, "reason": why, "key_id": auth.KeyID(bearer(r))})
		return contract.Errorf(contract.CodeUnauthenticated, "valid credentials are required")
	}
	ri.principal = p
	if !ri.tenant.IsZero() && !p.HasTenant(ri.tenant.String()) {
		// Another tenant's state does not exist for this caller: 404, the
		// same answer as for a tenant that does not exist, audited in the
		// caller's own chain, never in the other's.
		if own, err := tenant.Parse(firstOr(p.Tenants, "")); err == nil {
			s.auditIn(r, own, ri, KindCrossTenant, p.ID, map[string]string{"requested_tenant": ri.tenant.String()})
		}
		return errNotFound
	}
	res := policy.Authorize(policy.Default(), policy.OpRequest{
		PrincipalID: p.ID, Role: p.Role, Granted: p.Tenants, Operation: op, Tenant: ri.tenant.String(),
	})
	if !res.Allowed {
		detail := map[string]string{"operation": op, "role": p.Role}
		if len(res.Errors) > 0 {
			detail["policy_errors"] = strings.Join(res.Errors, "; ")
		}
		if ri.tenant.IsZero() {
			s.auditIn(r, tenant.System, ri, KindForbidden, p.ID, detail)
		} else {
			s.auditIn(r, ri.tenant, ri, KindForbidden, p.ID, detail)
		}
		return contract.Errorf(contract.CodeForbidden, "role %s may not %s", p.Role, strings.ReplaceAll(op, "_", " "))
	}
	return nil
}

// authenticate returns the principal, or nil and why it failed; err only
// for a store failure.
func (s *Server) authenticate(r *http.Request) (*auth.Principal, string, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && s.cfg.Certs != nil {
		cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
		p, err := s.cfg.Certs.AuthenticateCert(r.Context(), cn)
		return s.authResult(p, err)
	}
	key := bearer(r)
	if key == "" {
		return nil, "missing", nil
	}
	p, err := s.cfg.Keys.Authenticate(r.Context(), key)
	return s.authResult(p, err)
}

func (s *Server) authResult(p *auth.Principal, err error) (*auth.Principal, string, error) {
	switch {
	case err == nil:
		return p, "", nil
	case errors.Is(err, auth.ErrExpired):
		return nil, "expired", nil
	case errors.Is(err, auth.ErrUnauthenticated):
		return nil, "unknown, malformed or revoked", nil
	default:
		return nil, "", contract.Wrap(contract.CodeStoreUnavailable, "cannot check credentials right now", err)
	}
}

func bearer(r *http.Request) string {
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return key
}

func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

func (s *Server) auditSystem(r *http.Request, ri *reqInfo, kind, actor string, detail map[string]string) {
	s.auditIn(r, tenant.System, ri, kind, actor, detail)
}

// auditIn records a boundary event; a failure to audit is logged (the
// request is refused either way).
func (s *Server) auditIn(r *http.Request, t tenant.ID, ri *reqInfo, kind, actor string, detail map[string]string) {
	if s.cfg.Audit == nil {
		return
	}
	payload := map[string]string{"method": r.Method, "route": r.Pattern}
	for k, v := range detail {
		payload[k] = v
	}
	if actor == "" {
		actor = "anonymous"
	}
	if _, err := s.cfg.Audit.Append(r.Context(), t, audit.Entry{
		Kind: kind, CorrelationID: ri.id, Actor: actor, RequestID: ri.id, Time: s.now(), Payload: payload,
	}); err != nil {
		s.cfg.Logger.ErrorContext(r.Context(), "audit boundary event", "kind", kind, "err", err)
	}
}

// failures counts failed authentications per source in fixed windows.
type failures struct {
	mu sync.Mutex
	by map[string]window
}

type window struct {
	start time.Time
	n     int
}

func (f *failures) blocked(src string, now time.Time, limit int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.by[src]
	return ok && now.Sub(w.start) < failWindow && w.n >= limit
}

func (s *Server) failLimit() int {
	if s.cfg.AuthFailLimit > 0 {
		return s.cfg.AuthFailLimit
	}
	return defaultFailLimit
}

func (f *failures) fail(src string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]window{}
	}
	w := f.by[src]
	if now.Sub(w.start) >= failWindow {
		w = window{start: now}
	}
	w.n++
	f.by[src] = w
	if len(f.by) > 100000 { // bound memory under a spray of sources
		for k, v := range f.by {
			if now.Sub(v.start) >= failWindow {
				delete(f.by, k)
			}
		}
	}
}
