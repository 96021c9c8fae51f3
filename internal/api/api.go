// Package api is ExoArmur's HTTP boundary: net/http routing, authentication
// and tenant middleware, and the one place that turns application errors into
// HTTP responses. Handlers return errors; writeError maps contract error
// codes to status codes and never shows internal causes.
package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/contracts"
	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/active"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// MaxBody is the largest request body accepted (413 beyond).
const MaxBody = 1 << 20

// Switches reads and changes kill switches (internal/killswitch).
type Switches interface {
	ReadScope(t tenant.ID) killswitch.Reading
	Set(ctx context.Context, scope tenant.ID, f killswitch.Flip) (killswitch.Change, error)
}

// Policies activates and describes the active policy bundles
// (internal/policy/active).
type Policies interface {
	Activate(ctx context.Context, req active.Request) (active.Activation, error)
	Describe(t tenant.ID) active.Active
}

// ApprovalLister lists a tenant's approvals with who stands behind each
// vote (internal/approval).
type ApprovalLister interface {
	List(ctx context.Context, t tenant.ID, status string, now time.Time) ([]approval.Listed, error)
}

// Config wires the API.
type Config struct {
	Gate      *gate.Gate
	Switches  Switches
	Policies  Policies // nil: activation answers 404
	Approvals ApprovalLister
	Access    *access.Service // authentication and authorization of every operation
	Audit     *audit.Log
	// Bundles returns the policy bundles a verification re-decides with
	// (the store's archive); nil: the bundles this binary shipped.
	Bundles func(context.Context) (replay.Bundles, error)
	// Actions are the action types a verification re-decides with (the
	// server's: the built-ins and its declared actions); nil: the
	// built-ins.
	Actions *action.Registry
	// Checkpoints signs the chains' heads (nil: exports end without a
	// checkpoint and verification checks the hash chain only).
	Checkpoints Checkpoints
	// Exports bounds the audit exports this node streams at once (0:
	// DefaultExports); more wait their turn (constant memory however many
	// are asked for).
	Exports int
	// TenantReads bounds the reads of one tenant that scan it whole (the
	// intent, approval and audit lists, the export, the verification)
	// this node serves at once (0: DefaultTenantReads); more wait their
	// turn, so one tenant's heavy reads hold at most this many of the
	// node's goroutines (docs/RELIABILITY.md, noisy neighbour).
	TenantReads int
	Ready       func() bool // store readiness for /readyz
	// MCP serves the MCP endpoint (POST /v1/tenants/{tenant}/mcp) to a
	// principal the guard authenticated and authorized to propose in the
	// tenant; nil: the node has no MCP upstreams (404).
	MCP MCPHandler
	// Upstreams reports each MCP upstream's health for /readyz (nil: none).
	Upstreams func() any
	Now       func() time.Time // clock (default time.Now)
	RequestID func() string    // injected request ID source
	Logger    *slog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	exports chan struct{} // a slot per export being streamed

	readsMu sync.Mutex
	reads   map[string]*tenantReads // by tenant: its heavy reads' slots
}

// tenantReads are one tenant's slots for heavy reads and how many
// requests hold or wait for one (the entry is dropped at zero).
type tenantReads struct {
	slots chan struct{}
	users int
}

// DefaultTenantReads is the number of heavy reads of one tenant a node
// serves at once unless Config.TenantReads says otherwise.
const DefaultTenantReads = 2

// DefaultExports is the number of audit exports a node streams at once
// unless Config.Exports says otherwise.
const DefaultExports = 2

// Export write window: an export's write deadline moves exportWindow ahead
// of now each time exportProgress more bytes were written, so a long
// export outlives the server's WriteTimeout while its reader keeps up at
// 1 MiB a minute or more, and a reader that stalls is cut.
const (
	exportWindow   = time.Minute
	exportProgress = 1 << 20
)

// Route is one registered route; the OpenAPI test compares these with
// contracts/openapi.yaml.
type Route struct {
	Method, Path string
	Auth         bool
	Op           string // the authorized operation
}

// New returns the API server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Exports <= 0 {
		cfg.Exports = DefaultExports
	}
	if cfg.TenantReads <= 0 {
		cfg.TenantReads = DefaultTenantReads
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), exports: make(chan struct{}, cfg.Exports), reads: map[string]*tenantReads{}}
	for _, r := range s.routes() {
		s.mux.Handle(r.Method+" "+r.Path, r.h)
	}
	// Anything else: a JSON 404 or 405 that reveals nothing.
	s.mux.Handle("/", s.wrap("", func(w http.ResponseWriter, r *http.Request) error {
		for _, rt := range s.routes() {
			if _, pattern := s.mux.Handler(&http.Request{Method: rt.Method, URL: r.URL, Host: r.Host}); pattern == rt.Method+" "+rt.Path {
				return contract.Errorf(contract.CodeMethodNotAllowed, "method %s not allowed here", r.Method)
			}
		}
		return contract.Errorf(contract.CodeNotFound, "no such route")
	}))
	return s
}

type route struct {
	Route
	h http.Handler
}

// routes is the whole API: method, path, the operation the caller must be
// authorized for (cedar, internal/policy; "" = public), and the handler.
func (s *Server) routes() []route {
	r := func(method, path, op string, h func(http.ResponseWriter, *http.Request) error) route {
		return route{Route{method, path, op != "", op}, s.wrap(op, h)}
	}
	return []route{
		r("GET", "/healthz", "", s.healthz),
		r("GET", "/openapi.yaml", "", s.openAPI),
		r("GET", "/readyz", "", s.readyz),
		r("GET", "/metrics", policy.OpReadMetrics, s.metrics),
		r("POST", "/v1/tenants/{tenant}/intents", policy.OpPropose, s.propose),
		r("POST", "/v1/tenants/{tenant}/mcp", policy.OpPropose, s.mcp),
		r("GET", "/v1/tenants/{tenant}/intents", policy.OpReadIntent, s.heavy(s.listIntents)),
		r("GET", "/v1/tenants/{tenant}/intents/{id}", policy.OpReadIntent, s.getIntent),
		r("POST", "/v1/tenants/{tenant}/intents/{id}/resolve", policy.OpResolve, s.resolve),
		r("POST", "/v1/tenants/{tenant}/intents/{id}/execute", policy.OpExecute, s.execute),
		r("GET", "/v1/tenants/{tenant}/audit", policy.OpReadAudit, s.heavy(s.auditList)),
		r("GET", "/v1/tenants/{tenant}/audit/export", policy.OpReadTenantAudit, s.heavy(s.auditExport)),
		r("GET", "/v1/tenants/{tenant}/audit/verify", policy.OpReadTenantAudit, s.heavy(s.auditVerify)),
		r("GET", "/v1/tenants/{tenant}/audit/checkpoint", policy.OpReadTenantAudit, s.getCheckpoint),
		r("POST", "/v1/tenants/{tenant}/audit/checkpoint", policy.OpReadTenantAudit, s.heavy(s.signCheckpoint)),
		r("GET", "/v1/tenants/{tenant}/policy/shadow", policy.OpReadTenantAudit, s.policyShadow),
		r("GET", "/v1/tenants/{tenant}/policy", policy.OpReadTenantSwitch, s.getPolicy),
		r("PUT", "/v1/tenants/{tenant}/policy", policy.OpActivatePolicy, s.putPolicy),
		r("GET", "/v1/policy", policy.OpReadGlobalSwitch, s.getPolicy),
		r("PUT", "/v1/policy", policy.OpActivateGlobalPolicy, s.putPolicy),
		r("GET", "/v1/audit/keys", "", s.auditKeys),
		r("GET", "/v1/tenants/{tenant}/approvals", policy.OpReadApprovals, s.heavy(s.listApprovals)),
		r("POST", "/v1/tenants/{tenant}/intents/{id}/approvals", policy.OpApprove, s.decideApproval),
		r("GET", "/v1/killswitch", policy.OpReadGlobalSwitch, s.getSwitch),
		r("PUT", "/v1/killswitch", policy.OpFlipGlobalSwitch, s.putSwitch),
		r("GET", "/v1/tenants/{tenant}/killswitch", policy.OpReadTenantSwitch, s.getSwitch),
		r("PUT", "/v1/tenants/{tenant}/killswitch", policy.OpFlipTenantSwitch, s.putSwitch),
		r("POST", "/v1/keys", policy.OpKeyManagement, s.createKey),
		r("GET", "/v1/keys", policy.OpKeyManagement, s.listKeys),
		r("DELETE", "/v1/keys/{id}", policy.OpKeyManagement, s.revokeKey),
		r("POST", "/v1/keys/{id}/consent", policy.OpKeyManagement, s.consentKey),
	}
}

// Routes lists the registered routes.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.routes() {
		out = append(out, r.Route)
	}
	return out
}

// heavy runs h, a read that scans its tenant whole, once one of the
// tenant's TenantReads slots on this node is free (waiting while the
// client does).
func (s *Server) heavy(h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		t := info(r).tenant.String()
		s.readsMu.Lock()
		tr := s.reads[t]
		if tr == nil {
			tr = &tenantReads{slots: make(chan struct{}, s.cfg.TenantReads)}
			s.reads[t] = tr
		}
		tr.users++
		s.readsMu.Unlock()
		defer func() {
			s.readsMu.Lock()
			if tr.users--; tr.users == 0 {
				delete(s.reads, t)
			}
			s.readsMu.Unlock()
		}()
		select {
		case tr.slots <- struct{}{}:
			defer func() { <-tr.slots }()
		case <-r.Context().Done():
			return contract.Wrap(contract.CodeRequestTimeout, "the read was abandoned while it waited for its turn (this tenant's other reads)", r.Context().Err())
		}
		return h(w, r)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// NewHTTPServer returns an http.Server with timeouts that bound slow clients.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

type reqInfo struct {
	id        string
	tenant    tenant.ID
	principal *auth.Principal
}

type infoKey struct{}

func info(r *http.Request) *reqInfo { return r.Context().Value(infoKey{}).(*reqInfo) }

// wrap is the middleware chain: request id, tenant validation (400 before
// any store access), authentication (401), tenant grant (403), then the
// handler, whose error is written in one place.
func (s *Server) wrap(op string, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := &reqInfo{}
		if s.cfg.RequestID != nil && op != "" {
			// Only authenticated routes take an ID from the source, so
			// health probes never shift the sequence of a deterministic one.
			ri.id = s.cfg.RequestID()
		}
		w.Header().Set("X-Request-Id", ri.id)
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		err := s.guard(r, ri, op)
		if err == nil {
			err = h(w, r)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	})
}

// errorBody is the one error shape: {"error":{"code","message","reasons"}}.
type errorBody struct {
	Error struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Reasons []string `json:"reasons,omitempty"`
	} `json:"error"`
	RequestID string             `json:"request_id,omitempty"`
	Decision  *contract.Decision `json:"decision,omitempty"`
}

// httpStatus maps an application error code to an HTTP status.
// readBody reads a request body whole. A body over MaxBody stays a
// *http.MaxBytesError (413); a body the client was too slow to send is
// request_timeout (408); any other read failure (a broken chunked
// encoding, a client gone away) is invalid_request. None is a 500.
func readBody(r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case err == nil:
		return raw, nil
	case errors.As(err, &mbe):
		return nil, err
	case errors.As(err, &ne) && ne.Timeout():
		return nil, contract.Wrap(contract.CodeRequestTimeout, "the request body did not arrive in time", err)
	default:
		return nil, contract.Wrap(contract.CodeInvalid, "the request body could not be read", err)
	}
}

func httpStatus(code string) int {
	switch code {
	case contract.CodeInvalid, contract.CodeInvalidTenant, contract.CodeUnknownAction:
		return http.StatusBadRequest
	case contract.CodeUnauthenticated:
		return http.StatusUnauthorized
	case contract.CodeRateLimited, contract.CodeQuotaExceeded:
		return http.StatusTooManyRequests
	case contract.CodeForbidden, contract.CodeBlocked, contract.CodeSelfApproval:
		return http.StatusForbidden
	case contract.CodeNotFound:
		return http.StatusNotFound
	case contract.CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case contract.CodeConflict, contract.CodeInDoubt:
		return http.StatusConflict
	case contract.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case contract.CodeRequestTimeout:
		return http.StatusRequestTimeout
	case contract.CodeStoreUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type decisionError struct {
	error
	decision contract.Decision
}

func (e decisionError) Unwrap() error { return e.error }

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var body errorBody
	var mbe *http.MaxBytesError
	var ae *contract.Error
	switch {
	case errors.As(err, &mbe):
		body.Error.Code, body.Error.Message = contract.CodeTooLarge, "request body exceeds 1 MiB"
	case errors.As(err, &ae):
		body.Error.Code, body.Error.Message, body.Error.Reasons = ae.Code, ae.Message, ae.Reasons
		if ae.RetryAfter > 0 {
			// Whole seconds, rounded up: never earlier than the limit lifts.
			w.Header().Set("Retry-After", strconv.FormatInt(int64((ae.RetryAfter+time.Second-1)/time.Second), 10))
		}
	default:
		body.Error.Code, body.Error.Message = contract.CodeInternal, "internal error"
	}
	var de decisionError
	if errors.As(err, &de) {
		body.Decision = &de.decision
	}
	ri := info(r)
	body.RequestID = ri.id
	status := httpStatus(body.Error.Code)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.cfg.Logger.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", status, "code", body.Error.Code, "request_id", ri.id, "err", err.Error())
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may have gone; nothing to do
}

// openAPI serves the contract the server was built with.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	b, err := contracts.FS.ReadFile("openapi.yaml")
	if err != nil {
		return err // embedded: cannot fail
	}
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(b)
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// metrics serves Prometheus metrics to admins (tenant IDs appear in label
// values, so the endpoint is authenticated like every other).
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	metrics.Handler().ServeHTTP(w, r)
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		return contract.Errorf(contract.CodeStoreUnavailable, "the durable store is not reachable")
	}
	if s.cfg.Upstreams != nil {
		// The upstreams' health is reported, not required: the store is
		// what the node needs to govern; a tool of a server that is down
		// fails as a tool error.
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "mcp_upstreams": s.cfg.Upstreams()})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// MCPHandler serves MCP (Streamable HTTP) to an authenticated principal
// authorized to propose in the tenant (internal/mcp's Frontend). It
// decides no access itself: every tools/call is a propose and an execute
// through the gate, the execute authorized by the access layer.
type MCPHandler interface {
	ServeMCP(w http.ResponseWriter, r *http.Request, p *auth.Principal, t tenant.ID, meta access.Meta)
}

func (s *Server) mcp(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.MCP == nil {
		return contract.Errorf(contract.CodeNotFound, "this node serves no MCP tools (serve --mcp-config)")
	}
	ri := info(r)
	s.cfg.MCP.ServeMCP(w, r, ri.principal, ri.tenant, s.meta(r, ri))
	return nil
}

func (s *Server) propose(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := contract.DecodeIntentRequest(raw)
	if err != nil {
		return err
	}
	if strings.HasPrefix(req.IdempotencyKey, contract.MCPKeyPrefix) {
		return contract.Errorf(contract.CodeInvalid, "field %q: keys starting %q are reserved for the MCP front end (/v1/tenants/{tenant}/mcp): choose another", "idempotency_key", contract.MCPKeyPrefix)
	}
	ri := info(r)
	v, created, err := s.cfg.Gate.Propose(r.Context(), ri.tenant, ri.principal, req, gate.Meta{RequestID: ri.id})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
	return nil
}

// getIntent: an intent of another principal reads, to a principal that
// may not read the whole tenant (an agent), as one that does not exist
// (404, audited by the access layer).
func (s *Server) getIntent(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	v, err := s.cfg.Gate.Get(r.Context(), ri.tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.cfg.Access.AuthorizeOwned(r.Context(), s.tenantRead(r, ri, policy.OpReadTenantIntents), v.Intent.Proposer); err != nil {
		if contract.ErrorCode(err) == contract.CodeNotFound {
			return s.cfg.Gate.NotFound() // word for word what a missing intent answers
		}
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// tenantRead is the access request for the tenant-wide read op by the
// request's principal: whether it reads the whole tenant or only its own
// (access.Service.ReadScope, AuthorizeOwned).
func (s *Server) tenantRead(r *http.Request, ri *reqInfo, op string) access.Request {
	return access.Request{Principal: ri.principal, Operation: op, Tenant: ri.tenant, Meta: s.meta(r, ri)}
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	out, err := s.cfg.Gate.Execute(r.Context(), ri.tenant, ri.principal, r.PathValue("id"), gate.Meta{RequestID: ri.id})
	if err != nil {
		if contract.ErrorCode(err) == contract.CodeBlocked {
			return decisionError{err, out.Decision}
		}
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func parseUint(r *http.Request, name string, def, max uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || (max > 0 && n > max) {
		return 0, contract.Errorf(contract.CodeInvalid, "query %q: must be an integer in 0..%d", name, max)
	}
	return n, nil
}

// auditList: GET .../audit?after=&limit=&intent= pages the tenant's chain
// for its overseers (operator, admin, auditor: scope "tenant"). Any other
// principal (an agent) reads only the records of its own intents (scope
// "own"): a page is a window of limit records of the chain, of which only
// those are returned (audit.Log.ScanOwned), so the chain's end is reached
// when next_after-after < limit. With intent=<id>, the page holds up to
// limit records of that intent (for an agent, only while it is its own),
// read in one pass, and the intent's records end when fewer than limit
// came back (audit.Log.ScanIntent).
func (s *Server) auditList(w http.ResponseWriter, r *http.Request) error {
	after, err := parseUint(r, "after", 0, 1<<62)
	if err != nil {
		return err
	}
	limit, err := parseUint(r, "limit", 100, 1000)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 100
	}
	ri := info(r)
	recs := []json.RawMessage{}
	next := after
	collect := func(raw []byte, rec contract.AuditRecord) error {
		recs = append(recs, json.RawMessage(raw))
		next = rec.Seq
		return nil
	}
	scope := s.cfg.Access.ReadScope(s.tenantRead(r, ri, policy.OpReadTenantAudit))
	intent := r.URL.Query().Get("intent")
	if len(intent) > 128 {
		return contract.Errorf(contract.CodeInvalid, "query \"intent\": an intent ID is at most 128 bytes")
	}
	switch {
	case intent != "":
		// The records of one intent (of the principal's own, for an
		// agent), in one pass over the chain: up to limit of them, and
		// fewer once they end (audit.Log.ScanIntent).
		next, err = s.cfg.Audit.ScanIntent(r.Context(), ri.tenant, intent, scope.Owner, after, int(limit), func(raw []byte, _ contract.AuditRecord) error {
			recs = append(recs, json.RawMessage(raw))
			return nil
		})
	case scope.Whole():
		err = s.cfg.Audit.ScanHeads(r.Context(), ri.tenant, after, int(limit), collect)
	default:
		// Only the records of the principal's own intents: the page is a
		// window of limit records, of which those are returned; next_after
		// is the window's end (audit.Log.ScanOwned).
		next, err = s.cfg.Audit.ScanOwned(r.Context(), ri.tenant, scope.Owner, after, int(limit), func(raw []byte, _ contract.AuditRecord) error {
			recs = append(recs, json.RawMessage(raw))
			return nil
		})
	}
	if err != nil {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the audit log", err)
	}
	body := map[string]any{"tenant": ri.tenant.String(), "records": recs, "next_after": next, "scope": "tenant"}
	if !scope.Whole() {
		body["scope"] = "own"
	}
	if intent != "" {
		body["intent"] = intent
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// auditExport streams the chain as JSON Lines while it is scanned: the
// memory of an export is the scan's batch and the server's write buffer,
// whatever the chain's length. A read that fails before the first record
// is an ordinary error answer. One that fails after it cannot change the
// status that was sent, so the response is aborted: the connection is
// closed without the chunked encoding's last chunk and without the
// contract.ExportTrailer, and every HTTP client reads an unexpected end of the body
// (the Go client returns an error; so does Python's http.client). A
// complete export ends with the trailer holding its record count.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	select {
	case s.exports <- struct{}{}:
		defer func() { <-s.exports }()
	case <-r.Context().Done():
		return contract.Wrap(contract.CodeRequestTimeout, "the export was abandoned while it waited for its turn", r.Context().Err())
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(exportWindow)) // not supported: the server's WriteTimeout holds
	n, written := 0, 0
	started := false
	start := func() {
		h := w.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Content-Disposition", `attachment; filename="audit-`+ri.tenant.String()+`.jsonl"`)
		h.Set("Trailer", contract.ExportTrailer)
		w.WriteHeader(http.StatusOK)
		started = true
	}
	var check *checkpoint.ChainCheck
	if s.cfg.Checkpoints != nil {
		check = s.cfg.Checkpoints.Check(ri.tenant)
	}
	err := s.cfg.Audit.ScanHeads(r.Context(), ri.tenant, 0, 0, func(raw []byte, rec contract.AuditRecord) error {
		if !started {
			start()
		}
		if check != nil {
			check.Next(raw, rec)
		}
		if _, err := w.Write(raw); err != nil {
			return err
		}
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return err
		}
		n++
		if written += len(raw) + 1; written >= exportProgress {
			written = 0
			_ = rc.SetWriteDeadline(time.Now().Add(exportWindow))
		}
		return nil
	})
	if err != nil && !started {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the audit log", err)
	}
	if err != nil {
		s.cfg.Logger.Error("audit export aborted after it began", "tenant", ri.tenant.String(), "records_sent", n, "request_id", ri.id, "err", err.Error())
		_ = rc.Flush()              // what was written reaches the client, then the cut
		panic(http.ErrAbortHandler) // net/http closes the connection: the client sees the body cut short
	}
	if !started {
		start()
	}
	if check != nil && n > 0 {
		// The export ends with the checkpoint of its last record, signed
		// now if the node has none there, and only if the chain it
		// streamed verified and extends the node's last checkpoint.
		cp, err := check.Vouch(r.Context())
		if err != nil {
			s.cfg.Logger.Error("audit export ends without a checkpoint: a verifier with the node's public key will refuse it", "tenant", ri.tenant.String(), "records_sent", n, "request_id", ri.id, "err", err.Error())
		} else if line, err := contract.Canonical(cp); err == nil {
			if _, err := w.Write(append(line, '\n')); err != nil {
				return nil // the client went away; nothing more to say
			}
		}
	}
	w.Header().Set(contract.ExportTrailer, strconv.Itoa(n))
	return nil
}

// policyShadow sums up what this node's shadow bundle decided otherwise
// for the tenant (gate.Config.Shadow); 404 when it runs none.
func (s *Server) policyShadow(w http.ResponseWriter, r *http.Request) error {
	sum, ok := s.cfg.Gate.Shadow(info(r).tenant)
	if !ok {
		return contract.Errorf(contract.CodeNotFound, "this node evaluates no shadow bundle: start it with --shadow-policy-dir DIR")
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// getPolicy says which bundle the tenant (or, at /v1/policy, the global
// scope) decides under on this node, and the activation behind it.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Policies == nil {
		return contract.Errorf(contract.CodeNotFound, "this server has no policy activation")
	}
	scope, err := switchScope(info(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.cfg.Policies.Describe(scope))
	return nil
}

// putPolicy activates a bundle for the tenant (or, at /v1/policy,
// globally): 400 with every problem for a bundle that does not validate
// (nothing written), 200 once it is written, audited and this node applied
// it (the answer lists the live nodes that confirmed and those that did
// not), 202 when this node did not confirm within the switches' bound.
func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Policies == nil {
		return contract.Errorf(contract.CodeNotFound, "this server has no policy activation")
	}
	ri := info(r)
	scope, err := switchScope(ri)
	if err != nil {
		return err
	}
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := contract.DecodePolicyActivation(raw)
	if err != nil {
		return err
	}
	files := make([]policy.File, len(req.Files))
	for i, f := range req.Files {
		files[i] = policy.File{Name: f.Name, Source: []byte(f.Source)}
	}
	act, err := s.cfg.Policies.Activate(r.Context(), active.Request{Scope: scope, Files: files, Actor: ri.principal.ID, Reason: req.Reason, RequestID: ri.id})
	var probs *policy.Problems
	var ce *contract.Error
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, act)
		return nil
	case errors.Is(err, killswitch.ErrStale):
		writeJSON(w, http.StatusAccepted, act)
		return nil
	case errors.As(err, &probs):
		reasons := make([]string, len(probs.List))
		for i, p := range probs.List {
			reasons[i] = p.String()
		}
		return &contract.Error{Code: contract.CodeInvalid, Message: fmt.Sprintf("the bundle does not validate against this server's actions (%d problem(s)); nothing was activated: %s", len(reasons), strings.Join(reasons, "; "))}
	case errors.As(err, &ce):
		return err
	case errors.Is(err, active.ErrUnaudited):
		return contract.Wrap(contract.CodeStoreUnavailable, "the bundle is activated, but its record could not be written nor the activation undone: it may be in force unaudited; activate again once the store answers", err)
	default:
		return contract.Wrap(contract.CodeStoreUnavailable, "the policy bundle could not be activated: the store did not answer; nothing was changed unless GET the policy says otherwise", err)
	}
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	var bundles replay.Bundles = policy.Builtin()
	if s.cfg.Bundles != nil {
		var err error
		if bundles, err = s.cfg.Bundles(r.Context()); err != nil {
			return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the policy archive", err)
		}
	}
	rp := replay.NewWith(ri.tenant.String(), bundles, cmp.Or(s.cfg.Actions, action.Builtin()))
	if err := s.anchor(r.Context(), rp, ri.tenant); err != nil {
		return err
	}
	err := s.cfg.Audit.ScanHeads(r.Context(), ri.tenant, 0, 0, func(raw []byte, _ contract.AuditRecord) error {
		rp.Add(raw)
		return nil
	})
	if err != nil {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the audit log", err)
	}
	writeJSON(w, http.StatusOK, rp.Report())
	return nil
}

// switchScope returns the switch a request addresses (roles were checked
// by guard: flip/read_global_switch is admin only, the tenant operations
// operator or admin of the tenant).
func switchScope(ri *reqInfo) (tenant.ID, error) {
	if ri.tenant.IsZero() {
		return tenant.System, nil
	}
	return ri.tenant, nil
}

func (s *Server) getSwitch(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	scope, err := switchScope(ri)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"state": s.cfg.Switches.ReadScope(scope)})
	return nil
}

func (s *Server) putSwitch(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	scope, err := switchScope(ri)
	if err != nil {
		return err
	}
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := contract.DecodeKillSwitchRequest(raw)
	if err != nil {
		return err
	}
	ch, err := s.cfg.Switches.Set(r.Context(), scope, killswitch.Flip{Engaged: req.Engaged, Reason: req.Reason, Actor: ri.principal.ID, RequestID: ri.id})
	if err != nil {
		if errors.Is(err, killswitch.ErrStale) {
			writeJSON(w, http.StatusAccepted, ch)
			return nil
		}
		return contract.Wrap(contract.CodeStoreUnavailable, "the kill switch could not be changed durably", err)
	}
	writeJSON(w, http.StatusOK, ch)
	return nil
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// approvalItem is one entry of the approval queue: the approval, the
// intent it is for, and the lineage of each vote (credential, owner,
// creator), so operators see when one person or one admin's keys voted.
type approvalItem struct {
	Approval approval.Record       `json:"approval"`
	Intent   contract.ActionIntent `json:"intent"`
	Lineage  []approval.Lineage    `json:"lineage"`
}

// listApprovals: GET .../approvals?status=&limit=&cursor= pages the queue,
// oldest first (page.go); an intent is read only for the items of the page.
func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	status := r.URL.Query().Get("status")
	switch status {
	case "", approval.StatusPending, approval.StatusApproved, approval.StatusDenied, approval.StatusExpired, approval.StatusExecuted:
	default:
		return contract.Errorf(contract.CodeInvalid, "query \"status\": must be pending, approved, denied, expired or executed")
	}
	limit, cur, err := pageQuery(r, true)
	if err != nil {
		return err
	}
	listed, err := s.cfg.Approvals.List(r.Context(), ri.tenant, status, s.now())
	if err != nil {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read approvals", err)
	}
	if cur != nil {
		listed = slices.DeleteFunc(listed, func(l approval.Listed) bool { return !cur.after(l.Record.RequestedAt, l.Record.IntentID) })
	}
	items := []approvalItem{}
	size := 0
	next := ""
	for _, l := range listed {
		if len(items) == limit {
			next = approvalCursor(items[len(items)-1])
			break
		}
		v, err := s.cfg.Gate.Get(r.Context(), ri.tenant, l.Record.IntentID)
		if err != nil {
			return err
		}
		it := approvalItem{Approval: l.Record, Intent: v.Intent, Lineage: l.Lineage}
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if size += len(b); size > MaxPageBytes && len(items) > 0 {
			next = approvalCursor(items[len(items)-1])
			break
		}
		items = append(items, it)
	}
	body := map[string]any{"tenant": ri.tenant.String(), "approvals": items}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func approvalCursor(it approvalItem) string {
	at := it.Approval.RequestedAt
	return pageCursor{At: &at, ID: it.Approval.IntentID}.encode()
}

func (s *Server) decideApproval(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := contract.DecodeApprovalDecision(raw)
	if err != nil {
		return err
	}
	ri := info(r)
	rec, err := s.cfg.Gate.DecideApproval(r.Context(), ri.tenant, ri.principal, r.PathValue("id"), req, gate.Meta{RequestID: ri.id})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// keyRequest is the body of POST /v1/keys (contracts/v1/key_create.schema.json:
// key_request.schema.json, frozen, with the auditor role too; or
// contracts/v2/key_create.schema.json when it grants a v2 action name).
type keyRequest struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Tenants   []string `json:"tenants"`
	Actions   []string `json:"actions"`
	ExpiresIn string   `json:"expires_in,omitempty"` // Go duration, e.g. "720h"
}

// createKey: the access layer decides whether the caller may create this
// key (tenants, role and actions within its own) and audits it.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	if err := contract.ValidateKeyCreate(raw); err != nil {
		return err
	}
	var req keyRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return contract.Wrap(contract.CodeInvalid, "body does not match the key request shape", err)
	}
	cr := auth.CreateRequest{Name: req.Name, Role: req.Role, Tenants: req.Tenants, Actions: req.Actions} // V1 has no owner: the name is the owner
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return contract.Errorf(contract.CodeInvalid, "field \"/expires_in\": must be a positive duration such as 720h")
		}
		cr.ExpiresAt = s.now().Add(d)
	}
	ri := info(r)
	key, p, err := s.cfg.Access.CreateKey(r.Context(), ri.principal, cr, s.meta(r, ri))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"key": key, "principal": p, "note": "the key is shown once; only its hash is stored"})
	return nil
}

// listKeys: GET /v1/keys?limit=&cursor= pages the credentials the caller
// manages, by principal ID (page.go).
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	limit, cur, err := pageQuery(r, false)
	if err != nil {
		return err
	}
	ps, err := s.cfg.Access.ListKeys(r.Context(), ri.principal, s.meta(r, ri))
	if err != nil {
		return err
	}
	slices.SortFunc(ps, func(a, b auth.Principal) int { return strings.Compare(a.ID, b.ID) })
	if cur != nil {
		ps = slices.DeleteFunc(ps, func(p auth.Principal) bool { return p.ID <= cur.ID })
	}
	body := map[string]any{}
	if len(ps) > limit {
		ps = ps[:limit]
		body["next"] = pageCursor{ID: ps[limit-1].ID}.encode()
	}
	body["keys"] = ps
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	p, err := s.cfg.Access.RevokeKey(r.Context(), ri.principal, r.PathValue("id"), s.meta(r, ri))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": p})
	return nil
}

// consentKey: a second admin's consent to a key that awaits it (the access
// layer decides who may give it and audits it).
func (s *Server) consentKey(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	c, err := contract.DecodeKeyConsent(raw)
	if err != nil {
		return err
	}
	ri := info(r)
	p, err := s.cfg.Access.ConsentKey(r.Context(), ri.principal, access.Consent{PrincipalID: r.PathValue("id"), Reason: c.Reason}, s.meta(r, ri))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"consented": p})
	return nil
}

// listIntents: GET /v1/tenants/{tenant}/intents lists the tenant's
// intents with their state, oldest first, filtered by state, action,
// proposer and creation time (since, until: RFC 3339), a page of limit
// (default 100, at most 500) at a time, continued with the cursor the page
// before returned as next. state=in_doubt alone keeps its V1 answer: the
// executions that started and never finished, from their claims (also of
// intents that have expired under a retention).
func (s *Server) listIntents(w http.ResponseWriter, r *http.Request) error {
	ri := info(r)
	vals := r.URL.Query()
	for k, v := range vals {
		if !slices.Contains([]string{"state", "action", "proposer", "since", "until", "limit", "cursor"}, k) {
			return contract.Errorf(contract.CodeInvalid, "query %q: unknown parameter (state, action, proposer, since, until, limit, cursor)", k)
		}
		if len(v) != 1 {
			return contract.Errorf(contract.CodeInvalid, "query %q: give it once", k)
		}
	}
	if vals.Get("state") == gate.StateInDoubt {
		if len(vals) != 1 {
			return contract.Errorf(contract.CodeInvalid, "query \"state\": in_doubt lists in-doubt executions and takes no other parameter")
		}
		list, err := s.cfg.Gate.ListInDoubt(r.Context(), ri.tenant)
		if err != nil {
			return err
		}
		if scope := s.cfg.Access.ReadScope(s.tenantRead(r, ri, policy.OpReadTenantIntents)); !scope.Whole() {
			// Only the principal's own: an in-doubt execution whose intent
			// is gone (a retention) is no one's.
			own := []gate.InDoubt{}
			for _, d := range list {
				v, err := s.cfg.Gate.Get(r.Context(), ri.tenant, d.IntentID)
				switch {
				case contract.ErrorCode(err) == contract.CodeNotFound:
				case err != nil:
					return err
				case scope.Covers(v.Intent.Proposer):
					own = append(own, d)
				}
			}
			list = own
		}
		writeJSON(w, http.StatusOK, map[string]any{"tenant": ri.tenant.String(), "state": gate.StateInDoubt, "intents": list})
		return nil
	}
	q := gate.ListQuery{State: vals.Get("state"), Action: vals.Get("action"), Proposer: vals.Get("proposer"), After: vals.Get("cursor")}
	scope := s.cfg.Access.ReadScope(s.tenantRead(r, ri, policy.OpReadTenantIntents))
	if !scope.Whole() {
		// A principal that may not read the whole tenant (an agent) lists
		// its own intents: another proposer asked for matches none.
		if q.Proposer != "" && !scope.Covers(q.Proposer) {
			writeJSON(w, http.StatusOK, map[string]any{"tenant": ri.tenant.String(), "intents": []gate.View{}, "next": ""})
			return nil
		}
		q.Proposer = scope.Owner
	}
	for _, tf := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v := vals.Get(tf.name); v != "" {
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return contract.Errorf(contract.CodeInvalid, "query %q: must be an RFC 3339 time such as 2026-01-01T00:00:00Z", tf.name)
			}
			*tf.dst = at
		}
	}
	if v := vals.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return contract.Errorf(contract.CodeInvalid, "query \"limit\": must be between 1 and %d", gate.MaxListLimit)
		}
		q.Limit = n
	}
	page, err := s.cfg.Gate.ListIntents(r.Context(), ri.tenant, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": ri.tenant.String(), "intents": page.Intents, "next": page.Next})
	return nil
}

// resolve: POST .../intents/{id}/resolve {"outcome":"succeeded"|"failed","reason":"..."}.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	if err := contract.Validate("resolve_request", raw); err != nil {
		return err
	}
	var req gate.Resolution
	if err := json.Unmarshal(raw, &req); err != nil {
		return contract.Wrap(contract.CodeInvalid, "body does not match the resolve request shape", err)
	}
	ri := info(r)
	res, err := s.cfg.Gate.Resolve(r.Context(), ri.tenant, ri.principal, r.PathValue("id"), req, gate.Meta{RequestID: ri.id})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
