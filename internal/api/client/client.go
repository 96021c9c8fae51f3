// Package client is the typed Go client of the ExoArmur REST API
// (internal/api, contracts/openapi.yaml), used by the CLI and by the tools
// that drive a running server. It is standard library only and reuses the
// wire types of internal/contract, internal/gate, internal/approval,
// internal/killswitch and internal/auth; where a handler writes an ad-hoc
// object, a small struct here names its fields.
//
// Every method takes a context first; the context is the deadline (the
// default *http.Client has no timeout of its own). A refusal by the server
// is a *Error carrying the status, the contract error code, the message,
// the reason codes and the request ID; callers branch on Code, or use
// errors.Is(err, &contract.Error{Code: ...}). A server that cannot be
// reached is an error wrapping ErrUnreachable that names the server tried.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/policy/active"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Bounds on what the client reads. A response beyond them is an error,
// never a silently truncated value.
const (
	// MaxResponse bounds a JSON (or metrics) response body.
	MaxResponse = 16 << 20
	// MaxExport bounds an audit export (AuditExport).
	MaxExport = 64 << 20
)

// DefaultUserAgent is sent unless WithUserAgent says otherwise.
const DefaultUserAgent = "exoarmur-client"

// ErrUnreachable is wrapped by the error of a request that never got an
// HTTP answer because the server could not be reached (refused, unknown
// host, no route).
var ErrUnreachable = errors.New("the ExoArmur server could not be reached")

// Client calls one ExoArmur server. It is safe for concurrent use; With
// derives a client for another key or server sharing the same transport.
type Client struct {
	base *url.URL
	key  string
	hc   *http.Client
	ua   string
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey authenticates every request with key (Authorization: Bearer).
func WithAPIKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient sends requests through hc (its transport, TLS settings,
// timeout). The default is a fresh *http.Client without a timeout.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// New returns a client of the server at baseURL (http or https, e.g.
// "http://127.0.0.1:8080"; a trailing slash is ignored).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: must be http:// or https:// and a host, e.g. http://127.0.0.1:8080", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: server URL %q: must not carry credentials, a query or a fragment", baseURL)
	}
	c := &Client{base: u, hc: &http.Client{}, ua: DefaultUserAgent}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// With returns a copy of c with opts applied (another key, user agent or
// HTTP client); c is unchanged.
func (c *Client) With(opts ...Option) *Client {
	d := *c
	for _, o := range opts {
		o(&d)
	}
	return &d
}

// BaseURL is the server the client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// Error is the server's refusal: the HTTP status and the API's error body
// {"error":{"code","message","reasons"},"request_id","decision"}.
type Error struct {
	Status    int
	Code      string   // contract error code, e.g. contract.CodeForbidden; "" if the body was not the API's
	Message   string   // safe to show
	Reasons   []string // reason codes (blocked decisions, refusals)
	RequestID string
	// Decision is the gate's verdict of a blocked execution.
	Decision *contract.Decision
	// Method and Path are the request that was refused.
	Method, Path string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Method != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.Path)
	}
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if len(e.Reasons) > 0 {
		b.WriteString(" (reasons: " + strings.Join(e.Reasons, ", ") + ")")
	}
	if e.RequestID != "" {
		b.WriteString(" [request " + e.RequestID + "]")
	}
	return b.String()
}

// Is matches a *contract.Error or another *Error by code, so
// errors.Is(err, &contract.Error{Code: contract.CodeNotFound}) works on
// what the client returns.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *contract.Error:
		return t.Code != "" && t.Code == e.Code
	case *Error:
		return t.Code != "" && t.Code == e.Code
	}
	return false
}

// errorBody is the API's error shape.
type errorBody struct {
	Error *struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Reasons []string `json:"reasons"`
	} `json:"error"`
	RequestID string             `json:"request_id"`
	Decision  *contract.Decision `json:"decision"`
}

// decodeError turns a non-2xx response into a *Error. A body that is not
// the API's error shape (a proxy's page) keeps a bounded excerpt as the
// message.
func decodeError(method, path string, status int, header http.Header, body []byte) *Error {
	e := &Error{Status: status, Method: method, Path: path, RequestID: header.Get("X-Request-Id")}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		e.Code, e.Message, e.Reasons = eb.Error.Code, eb.Error.Message, eb.Error.Reasons
		if eb.RequestID != "" {
			e.RequestID = eb.RequestID
		}
		e.Decision = eb.Decision
		return e
	}
	excerpt := strings.TrimSpace(string(body))
	if len(excerpt) > 200 {
		excerpt = excerpt[:200] + "..."
	}
	if excerpt == "" {
		excerpt = http.StatusText(status)
	}
	e.Message = "not an ExoArmur API error body: " + strconv.Quote(excerpt)
	return e
}

// send makes one request and returns the open response of a 2xx answer;
// any other answer is read (bounded) and returned as a *Error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	// path is built from validated tenants and escaped IDs.
	target := c.base.String() + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)) // an error body is small; a cut one decodes as "not an API error"
	return nil, decodeError(method, path, resp.StatusCode, resp.Header, raw)
}

// transportError explains a request that got no HTTP answer.
func (c *Client) transportError(ctx context.Context, method, path string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s%s: %w", method, c.base, path, ctx.Err())
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial") {
		return fmt.Errorf("%s %s%s: %w at %s (check --server, and that `exoarmur serve` is running there): %w",
			method, c.base, path, ErrUnreachable, c.base, err)
	}
	return fmt.Errorf("%s %s%s: %w", method, c.base, path, err)
}

// readBounded reads a whole body, failing (not truncating) beyond limit.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("the response exceeds the client's limit of %d MiB", limit>>20)
	}
	return b, nil
}

// do sends a request and decodes a 2xx JSON answer into out (nil: the
// body is read and discarded). It returns the status.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) (int, error) {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := readBounded(resp.Body, MaxResponse)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return 0, fmt.Errorf("%s %s: HTTP %d with a body that is not the expected JSON: %w", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, nil
}

// tenantPath returns /v1/tenants/{t}; t must be a valid tenant ID.
func tenantPath(t string) (string, error) {
	id, err := tenant.Parse(t)
	if err != nil {
		return "", fmt.Errorf("client: tenant: %w", err)
	}
	return "/v1/tenants/" + id.String(), nil
}

// intentPath returns /v1/tenants/{t}/intents/{id}.
func intentPath(t, id string) (string, error) {
	p, err := tenantPath(t)
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", errors.New("client: an intent ID is required")
	}
	return p + "/intents/" + url.PathEscape(id), nil
}

// Health calls GET /healthz (the process is up).
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
	return err
}

// Ready calls GET /readyz: nil when the node's durable store is reachable,
// a *Error with code store_unavailable (503) when not.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	return err
}

// Metrics returns the Prometheus text exposition of GET /metrics (admins).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := readBounded(resp.Body, MaxResponse)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	return b, nil
}

// Propose submits an intent (POST /v1/tenants/{t}/intents). created is
// false when the idempotency key named an intent that already existed
// (200 instead of 201); the view is then that intent.
func (c *Client) Propose(ctx context.Context, t string, req contract.IntentRequest) (v gate.View, created bool, err error) {
	p, err := tenantPath(t)
	if err != nil {
		return gate.View{}, false, err
	}
	status, err := c.do(ctx, http.MethodPost, p+"/intents", nil, req, &v)
	return v, status == http.StatusCreated, err
}

// GetIntent reads an intent, its state and decisions.
func (c *Client) GetIntent(ctx context.Context, t, id string) (gate.View, error) {
	p, err := intentPath(t, id)
	if err != nil {
		return gate.View{}, err
	}
	var v gate.View
	_, err = c.do(ctx, http.MethodGet, p, nil, nil, &v)
	return v, err
}

// Execute asks the gate to run an intent. A blocked decision is a *Error
// with code blocked, the reason codes and the Decision.
func (c *Client) Execute(ctx context.Context, t, id string) (gate.Outcome, error) {
	p, err := intentPath(t, id)
	if err != nil {
		return gate.Outcome{}, err
	}
	var out gate.Outcome
	_, err = c.do(ctx, http.MethodPost, p+"/execute", nil, nil, &out)
	return out, err
}

// ListInDoubt lists a tenant's executions that started and never finished
// (GET /v1/tenants/{t}/intents?state=in_doubt).
func (c *Client) ListInDoubt(ctx context.Context, t string) ([]gate.InDoubt, error) {
	p, err := tenantPath(t)
	if err != nil {
		return nil, err
	}
	var body struct {
		Intents []gate.InDoubt `json:"intents"`
	}
	_, err = c.do(ctx, http.MethodGet, p+"/intents", url.Values{"state": {gate.StateInDoubt}}, nil, &body)
	return body.Intents, err
}

// ListQuery selects intents (GET .../intents): gate.ListQuery; After is
// the Next of the page before.
type ListQuery = gate.ListQuery

// IntentPage is one page of intents and the cursor of the next ("" on the
// last).
type IntentPage = gate.ListPage

// ListIntents lists tenant t's intents matching q, oldest first, one page.
// q.State must not be in_doubt (ListInDoubt answers that).
func (c *Client) ListIntents(ctx context.Context, t string, q ListQuery) (IntentPage, error) {
	p, err := tenantPath(t)
	if err != nil {
		return IntentPage{}, err
	}
	if q.State == gate.StateInDoubt {
		return IntentPage{}, errors.New("client: list in-doubt executions with ListInDoubt")
	}
	v := url.Values{}
	for k, s := range map[string]string{"state": q.State, "action": q.Action, "proposer": q.Proposer, "cursor": q.After} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var page IntentPage
	_, err = c.do(ctx, http.MethodGet, p+"/intents", v, nil, &page)
	if page.Intents == nil {
		page.Intents = []gate.View{}
	}
	return page, err
}

// OpenAPI returns the contract the server serves (GET /openapi.yaml).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/openapi.yaml", nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: GET /openapi.yaml: HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("client: GET /openapi.yaml: %w", err)
	}
	if len(b) > MaxResponse {
		return nil, fmt.Errorf("client: GET /openapi.yaml: larger than %d bytes", MaxResponse)
	}
	return b, nil
}

// ResolveRequest records the outcome of an in-doubt execution, as an
// operator established it (Outcome: contract.StatusSucceeded or
// contract.StatusFailed).
type ResolveRequest = gate.Resolution

// Resolve records the outcome of an in-doubt execution.
func (c *Client) Resolve(ctx context.Context, t, id string, req ResolveRequest) (contract.ExecutionResult, error) {
	p, err := intentPath(t, id)
	if err != nil {
		return contract.ExecutionResult{}, err
	}
	var res contract.ExecutionResult
	_, err = c.do(ctx, http.MethodPost, p+"/resolve", nil, req, &res)
	return res, err
}

// ApprovalItem is one entry of the approval queue: the approval, the intent
// it is for, and who stands behind each vote.
type ApprovalItem struct {
	Approval approval.Record       `json:"approval"`
	Intent   contract.ActionIntent `json:"intent"`
	Lineage  []approval.Lineage    `json:"lineage"`
}

// PageQuery selects one page of a paged list (approvals, keys): Limit
// items at most (0: the server's default 100; at most 1000), after the
// Cursor the page before returned as Next ("" for the first page).
type PageQuery struct {
	Limit  int
	Cursor string
}

func (q PageQuery) values(v url.Values) url.Values {
	if v == nil {
		v = url.Values{}
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	return v
}

// ApprovalPage is one page of a tenant's approval queue and the cursor of
// the next ("" on the last).
type ApprovalPage struct {
	Tenant    string         `json:"tenant"`
	Approvals []ApprovalItem `json:"approvals"`
	Next      string         `json:"next,omitempty"`
}

// ApprovalsPage reads one page of a tenant's approvals with status
// (approval.StatusPending, ...; "" for all), oldest first.
func (c *Client) ApprovalsPage(ctx context.Context, t, status string, q PageQuery) (ApprovalPage, error) {
	p, err := tenantPath(t)
	if err != nil {
		return ApprovalPage{}, err
	}
	v := url.Values{}
	if status != "" {
		v.Set("status", status)
	}
	var page ApprovalPage
	_, err = c.do(ctx, http.MethodGet, p+"/approvals", q.values(v), nil, &page)
	if page.Approvals == nil {
		page.Approvals = []ApprovalItem{}
	}
	return page, err
}

// ListApprovals lists all of a tenant's approvals with status
// (approval.StatusPending, ...; "" for all), following the pages: either
// every item or an error, never a part.
func (c *Client) ListApprovals(ctx context.Context, t, status string) ([]ApprovalItem, error) {
	return follow(func(cursor string) ([]ApprovalItem, string, error) {
		page, err := c.ApprovalsPage(ctx, t, status, PageQuery{Cursor: cursor})
		return page.Approvals, page.Next, err
	})
}

// follow reads pages until one has no next cursor; a server that answers
// a cursor with itself is an error, not a loop.
func follow[T any](page func(cursor string) ([]T, string, error)) ([]T, error) {
	out := []T{}
	cursor := ""
	for {
		items, next, err := page(cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		if next == cursor {
			return nil, fmt.Errorf("client: the server returned the cursor it was given (%q): the listing does not advance", next)
		}
		cursor = next
	}
}

// DecideApproval votes on an intent's approval (Decision "approve" or
// "deny"; a denial is final) and returns the approval after the vote.
func (c *Client) DecideApproval(ctx context.Context, t, id string, d contract.ApprovalDecision) (approval.Record, error) {
	p, err := intentPath(t, id)
	if err != nil {
		return approval.Record{}, err
	}
	var rec approval.Record
	_, err = c.do(ctx, http.MethodPost, p+"/approvals", nil, d, &rec)
	return rec, err
}

// switchPath is the global switch for "", else the tenant's.
func switchPath(t string) (string, error) {
	if t == "" {
		return "/v1/killswitch", nil
	}
	p, err := tenantPath(t)
	return p + "/killswitch", err
}

// GetKillSwitch reads the global kill switch (t == "") or a tenant's.
func (c *Client) GetKillSwitch(ctx context.Context, t string) (killswitch.Reading, error) {
	p, err := switchPath(t)
	if err != nil {
		return killswitch.Reading{}, err
	}
	var body struct {
		State killswitch.Reading `json:"state"`
	}
	_, err = c.do(ctx, http.MethodGet, p, nil, nil, &body)
	return body.State, err
}

// SetKillSwitch engages or disengages the global kill switch (t == "") or
// a tenant's. confirmed is false when the change was written and audited
// but the node that served the request did not confirm applying it within
// the staleness bound (HTTP 202).
func (c *Client) SetKillSwitch(ctx context.Context, t string, req contract.KillSwitchRequest) (ch killswitch.Change, confirmed bool, err error) {
	p, err := switchPath(t)
	if err != nil {
		return killswitch.Change{}, false, err
	}
	status, err := c.do(ctx, http.MethodPut, p, nil, req, &ch)
	return ch, status == http.StatusOK, err
}

func policyPath(t string) (string, error) {
	if t == "" {
		return "/v1/policy", nil
	}
	p, err := tenantPath(t)
	return p + "/policy", err
}

// GetPolicy says which bundle the global scope (t == "") or tenant t
// decides under on the node that answers, and the activation behind it.
func (c *Client) GetPolicy(ctx context.Context, t string) (active.Active, error) {
	p, err := policyPath(t)
	if err != nil {
		return active.Active{}, err
	}
	var a active.Active
	_, err = c.do(ctx, http.MethodGet, p, nil, nil, &a)
	return a, err
}

// ActivatePolicy makes req's files the active bundle of tenant t (t ==
// "": the global bundle). confirmed is false when the activation was
// written and audited but not every live node confirmed applying it
// within the staleness bound (HTTP 202).
func (c *Client) ActivatePolicy(ctx context.Context, t string, req contract.PolicyActivation) (a active.Activation, confirmed bool, err error) {
	p, err := policyPath(t)
	if err != nil {
		return active.Activation{}, false, err
	}
	status, err := c.do(ctx, http.MethodPut, p, nil, req, &a)
	return a, status == http.StatusOK, err
}

// KeyRequest asks for a new API key (POST /v1/keys). ExpiresIn 0 is a key
// without expiry.
type KeyRequest struct {
	Name      string
	Role      string   // auth.RoleAgent, auth.RoleAuditor, auth.RoleOperator or auth.RoleAdmin
	Tenants   []string // tenant IDs (auth.SystemGrant for the global powers)
	Actions   []string // action types, classes (A0..A3) or "*"
	ExpiresIn time.Duration
}

// CreatedKey is a new key: the secret, shown once, and its principal.
type CreatedKey struct {
	Key       string         `json:"key"`
	Principal auth.Principal `json:"principal"`
	Note      string         `json:"note"`
}

// CreateKey creates an API key within the caller's own grants.
func (c *Client) CreateKey(ctx context.Context, req KeyRequest) (CreatedKey, error) {
	body := struct {
		Name      string   `json:"name"`
		Role      string   `json:"role"`
		Tenants   []string `json:"tenants"`
		Actions   []string `json:"actions"`
		ExpiresIn string   `json:"expires_in,omitempty"`
	}{Name: req.Name, Role: req.Role, Tenants: req.Tenants, Actions: req.Actions}
	if req.ExpiresIn != 0 {
		// Go's duration syntax; the schema spells micro as "us".
		body.ExpiresIn = strings.ReplaceAll(req.ExpiresIn.String(), "µ", "u")
	}
	var out CreatedKey
	_, err := c.do(ctx, http.MethodPost, "/v1/keys", nil, body, &out)
	return out, err
}

// KeyPage is one page of the principals the caller may manage, by ID, and
// the cursor of the next ("" on the last).
type KeyPage struct {
	Keys []auth.Principal `json:"keys"`
	Next string           `json:"next,omitempty"`
}

// KeysPage reads one page of the principals the caller may manage.
func (c *Client) KeysPage(ctx context.Context, q PageQuery) (KeyPage, error) {
	var page KeyPage
	_, err := c.do(ctx, http.MethodGet, "/v1/keys", q.values(nil), nil, &page)
	if page.Keys == nil {
		page.Keys = []auth.Principal{}
	}
	return page, err
}

// ListKeys lists all the principals the caller may manage, following the
// pages: either every one or an error.
func (c *Client) ListKeys(ctx context.Context) ([]auth.Principal, error) {
	return follow(func(cursor string) ([]auth.Principal, string, error) {
		page, err := c.KeysPage(ctx, PageQuery{Cursor: cursor})
		return page.Keys, page.Next, err
	})
}

// RevokeKey revokes a principal (by its ID, "key_..."), returning it.
func (c *Client) RevokeKey(ctx context.Context, principalID string) (auth.Principal, error) {
	if principalID == "" {
		return auth.Principal{}, errors.New("client: a principal ID is required")
	}
	var body struct {
		Revoked auth.Principal `json:"revoked"`
	}
	_, err := c.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(principalID), nil, nil, &body)
	return body.Revoked, err
}

// ConsentKey gives the caller's consent to a key that awaits a second
// admin's (POST /v1/keys/{id}/consent), returning the key's principal.
func (c *Client) ConsentKey(ctx context.Context, principalID, reason string) (auth.Principal, error) {
	if principalID == "" {
		return auth.Principal{}, errors.New("client: a principal ID is required")
	}
	var body struct {
		Consented auth.Principal `json:"consented"`
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(principalID)+"/consent", nil, contract.KeyConsent{Reason: reason}, &body)
	return body.Consented, err
}

// AuditPage is one page of a tenant's audit chain. Records are kept as the
// server sent them, byte for byte, so their hashes can be checked; Decode
// parses them.
//
// Scope is "tenant" for a principal that reads the tenant's whole audit
// (operator, admin, auditor) and "own" for one that reads only the records
// of its own intents (an agent): its page is a window of limit records of
// the chain, of which only those are returned, so a page may hold fewer
// than limit records, or none, before the chain's end. Either way the
// chain's end is reached when NextAfter-after is less than the limit
// (End).
type AuditPage struct {
	Tenant    string            `json:"tenant"`
	Records   []json.RawMessage `json:"records"`
	NextAfter uint64            `json:"next_after"` // pass as after for the next page
	Scope     string            `json:"scope,omitempty"`
	Intent    string            `json:"intent,omitempty"` // the intent of an IntentAuditPage
}

// End reports whether the page, read with after and limit (the server's
// default 100 for 0), reached the chain's end.
func (p AuditPage) End(after uint64, limit int) bool {
	if limit <= 0 {
		limit = 100
	}
	return p.NextAfter-after < uint64(limit)
}

// Decode parses the page's records.
func (p AuditPage) Decode() ([]contract.AuditRecord, error) {
	out := make([]contract.AuditRecord, 0, len(p.Records))
	for _, raw := range p.Records {
		var r contract.AuditRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("audit record: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// AuditPage reads up to limit records (the server's default 100 for 0, at
// most 1000) after sequence number after: of the whole chain, or, for an
// agent, the records of its own intents among them (AuditPage.Scope).
func (c *Client) AuditPage(ctx context.Context, t string, after uint64, limit int) (AuditPage, error) {
	p, err := tenantPath(t)
	if err != nil {
		return AuditPage{}, err
	}
	if limit < 0 {
		return AuditPage{}, errors.New("client: audit page limit must not be negative")
	}
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page AuditPage
	_, err = c.do(ctx, http.MethodGet, p+"/audit", q, nil, &page)
	return page, err
}

// IntentAuditPage reads up to limit records (the server's default 100 for
// 0) of intent id after sequence number after, in one pass of the chain on
// the server; for an agent only while the intent is its own. The intent's
// records end when fewer than limit came back.
func (c *Client) IntentAuditPage(ctx context.Context, t, id string, after uint64, limit int) (AuditPage, error) {
	p, err := tenantPath(t)
	if err != nil {
		return AuditPage{}, err
	}
	if limit < 0 || id == "" {
		return AuditPage{}, errors.New("client: an intent ID and a limit that is not negative are required")
	}
	q := url.Values{"intent": {id}}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page AuditPage
	_, err = c.do(ctx, http.MethodGet, p+"/audit", q, nil, &page)
	return page, err
}

// AuditExport streams a tenant's whole audit chain as JSON Lines to w and
// returns the bytes written. Only whole records (lines) reach w: an export
// beyond MaxExport, or one cut short, is an error, and w then holds a
// prefix of complete records, never a partial one; callers writing a file
// should write elsewhere first and rename on success.
func (c *Client) AuditExport(ctx context.Context, t string, w io.Writer) (int64, error) {
	p, err := tenantPath(t)
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, http.MethodGet, p+"/audit/export", nil, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(io.LimitReader(resp.Body, MaxExport+1), 64<<10)
	var n int64
	records := 0
	for {
		line, err := br.ReadBytes('\n')
		if n+int64(len(line)) > MaxExport {
			return n, fmt.Errorf("GET %s/audit/export: the export exceeds the client's limit of %d MiB; %d bytes of whole records were written", p, MaxExport>>20, n)
		}
		if err == io.EOF {
			if len(line) > 0 {
				return n, fmt.Errorf("GET %s/audit/export: the export ends inside a record (cut short); %d bytes of whole records were written", p, n)
			}
			// The server streams the export and ends a complete one with a
			// trailer holding the record count; one that failed midway is
			// cut (an unexpected EOF above) and has no trailer.
			if _, declared := resp.Trailer[http.CanonicalHeaderKey(contract.ExportTrailer)]; declared {
				if got := resp.Trailer.Get(contract.ExportTrailer); got != strconv.Itoa(records) {
					return n, fmt.Errorf("GET %s/audit/export: the export is incomplete: %d records arrived, the server's count is %q; %d bytes of whole records were written", p, records, got, n)
				}
			}
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("GET %s/audit/export: the export was cut short (read: %w); %d bytes of whole records were written", p, err, n)
		}
		if !contract.IsCheckpointLine(line) { // the export's last line: its signed head
			records++
		}
		m, err := w.Write(line)
		n += int64(m)
		if err != nil {
			return n, fmt.Errorf("audit export: write: %w", err)
		}
	}
}

// AuditVerify has the server replay a tenant's chain and recompute every
// decision (GET /v1/tenants/{t}/audit/verify).
func (c *Client) AuditVerify(ctx context.Context, t string) (contract.ReplayReport, error) {
	p, err := tenantPath(t)
	if err != nil {
		return contract.ReplayReport{}, err
	}
	var rep contract.ReplayReport
	_, err = c.do(ctx, http.MethodGet, p+"/audit/verify", nil, nil, &rep)
	return rep, err
}

// Checkpoint returns a tenant chain's latest stored checkpoint
// (GET /v1/tenants/{t}/audit/checkpoint); 404 when none is signed yet.
func (c *Client) Checkpoint(ctx context.Context, t string) (contract.Checkpoint, error) {
	return c.checkpoint(ctx, http.MethodGet, t)
}

func (c *Client) checkpoint(ctx context.Context, method, t string) (contract.Checkpoint, error) {
	p, err := tenantPath(t)
	if err != nil {
		return contract.Checkpoint{}, err
	}
	var cp contract.Checkpoint
	_, err = c.do(ctx, method, p+"/audit/checkpoint", nil, nil, &cp)
	return cp, err
}

// SignCheckpoint has the server sign the chain's head now
// (POST /v1/tenants/{t}/audit/checkpoint); 409 conflict when the chain no
// longer extends the node's last checkpoint of it.
func (c *Client) SignCheckpoint(ctx context.Context, t string) (contract.Checkpoint, error) {
	return c.checkpoint(ctx, http.MethodPost, t)
}

// AuditKey is one of a node's audit public keys (GET /v1/audit/keys).
type AuditKey struct {
	KeyID     string    `json:"key_id"`
	PublicKey string    `json:"public_key"`
	Created   time.Time `json:"created"`
	Retired   time.Time `json:"retired,omitzero"`
	Current   bool      `json:"current"`
}

// AuditKeys returns the node's audit public keys. Pin them from a source
// you trust (`exoarmur audit pubkey` on the node) before relying on them.
func (c *Client) AuditKeys(ctx context.Context) ([]AuditKey, error) {
	var out struct {
		Keys []AuditKey `json:"keys"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/audit/keys", nil, nil, &out)
	return out.Keys, err
}
