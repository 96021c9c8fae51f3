package api

import (
	"net"
	"net/http"
	"strings"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// guard is the boundary: tenant validation (400, before any store access),
// then the access layer: authentication by client certificate or bearer key
// (401, 429 after too many failures from one source), tenant grant (404,
// never revealing another tenant) and the operation's authorization (403).
// Every refusal is audited there.
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
	if s.cfg.Access == nil {
		return contract.Errorf(contract.CodeStoreUnavailable, "authentication is not available on this node")
	}
	meta := s.meta(r, ri)
	creds := access.Credentials{APIKey: bearer(r), Source: source(r)}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		creds.CertCN = r.TLS.VerifiedChains[0][0].Subject.CommonName
	}
	p, err := s.cfg.Access.Authenticate(r.Context(), creds, meta)
	if err != nil {
		return err
	}
	ri.principal = p
	return s.cfg.Access.Authorize(r.Context(), access.Request{Principal: p, Operation: op, Tenant: ri.tenant, Meta: meta})
}

// meta is what the access layer records of a request.
func (s *Server) meta(r *http.Request, ri *reqInfo) access.Meta {
	return access.Meta{RequestID: ri.id, Method: r.Method, Route: r.Pattern}
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
