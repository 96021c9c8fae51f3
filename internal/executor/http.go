package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// httpClient enforces the allowlist at three depths: the target URL before
// the request, every redirect, and the dialed address (a name that resolves
// to an internal address (internal: private, loopback, link-local, CGNAT,
// reserved, or an IPv6 form carrying one) is refused unless that exact
// address is allowlisted).
type httpClient struct {
	client *http.Client
	// noRedirect shares client's transport and follows no redirect.
	noRedirect *http.Client
	allow      []string
	// maxBody bounds what a response body takes in the output
	// (contract.JSONLen): a larger one is cut to fit, marked truncated (cut).
	maxBody int64
}

func newHTTPClient(cfg Config) *httpClient {
	h := &httpClient{maxBody: contentBudget(cfg.MaxOutputBytes)}
	for _, a := range cfg.Allowlist {
		h.allow = append(h.allow, strings.ToLower(a))
	}
	dialer := &net.Dialer{Timeout: cfg.HTTPTimeout, Control: h.control}
	transport := &http.Transport{
		Proxy:                 nil, // never route through an environment proxy
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   cfg.HTTPTimeout,
		ResponseHeaderTimeout: cfg.HTTPTimeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	h.noRedirect = &http.Client{
		Transport:     transport,
		Timeout:       cfg.HTTPTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	h.client = &http.Client{
		Transport: transport,
		Timeout:   cfg.HTTPTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return h.allowed(req.URL.String())
		},
	}
	return h
}

func (h *httpClient) allowed(target string) error {
	host, hostPort, ok := policy.URLHost(target)
	if !ok {
		return fmt.Errorf("%q: only absolute http(s) URLs without credentials: %w", target, ErrHostNotAllowed)
	}
	if slices.Contains(h.allow, host) || slices.Contains(h.allow, hostPort) {
		return nil
	}
	return fmt.Errorf("%q: %w", hostPort, ErrHostNotAllowed)
}

// control runs before every connect with the resolved address.
func (h *httpClient) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	ip := ap.Addr().Unmap()
	if !internal(ip) {
		return nil
	}
	// Internal addresses only when allowlisted literally.
	if slices.Contains(h.allow, ip.String()) || slices.Contains(h.allow, net.JoinHostPort(ip.String(), strconv.Itoa(int(ap.Port())))) {
		return nil
	}
	return fmt.Errorf("dial %s: internal address not allowlisted: %w", address, ErrHostNotAllowed)
}

// request is one request an http executor sends.
type request struct {
	method, url string
	header      []action.Header // set on the request as given
	body        *string         // nil: no body
	// noRedirect returns a redirect as the response instead of following
	// it (a request carrying secrets: a redirect must not take its
	// headers to another URL).
	noRedirect bool
	// redact replaces each echo of a secret's value in the output.
	redact *strings.Replacer
	// secrets are the values redact removes, for a body cut inside one.
	secrets []string
}

func (h *httpClient) do(ctx context.Context, r request) (map[string]string, error) {
	if err := h.allowed(r.url); err != nil {
		return nil, err
	}
	var rd io.Reader
	if r.body != nil {
		rd = strings.NewReader(*r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", r.method, r.url, err)
	}
	req.Header.Set("User-Agent", "exoarmur")
	for _, hd := range r.header {
		req.Header.Set(hd.Name, hd.Value)
	}
	client := h.client
	if r.noRedirect {
		client = h.noRedirect
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", r.method, r.url, scrub(err, r.redact))
	}
	defer resp.Body.Close()
	// At most one byte more than fits: a larger body is cut, not read whole.
	b, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %q: read body: %w", r.method, r.url, scrub(err, r.redact))
	}
	size := resp.ContentLength
	if r.redact != nil {
		if int64(len(b)) > h.maxBody {
			b = action.DropSecretPrefix(b, r.secrets) // the read may have cut a secret
		}
		red := []byte(r.redact.Replace(string(b)))
		if len(red) != len(b) {
			size = -1 // the original size no longer describes the redacted body
		}
		b = red
	}
	out := cut("body", b, size, h.maxBody)
	out["status"] = strconv.Itoa(resp.StatusCode)
	if resp.StatusCode >= 400 {
		return out, fmt.Errorf("%s %q: http status %d", r.method, r.url, resp.StatusCode)
	}
	return out, nil
}

// scrub is err, or its text redacted when it echoes a secret.
func scrub(err error, redact *strings.Replacer) error {
	if redact == nil {
		return err
	}
	if s := redact.Replace(err.Error()); s != err.Error() {
		return errors.New(s)
	}
	return err
}

// httpRequest sends its method to the target, bound to its action type (a
// permit for another type is refused).
type httpRequest struct {
	h              *httpClient
	action, method string
}

var _ implementation = httpRequest{}

func (httpRequest) bind(r action.Registration, e *env) gate.Executor {
	return httpRequest{e.http, r.Type, r.Executor.Method}
}

// Run sends the request to an allowlisted host; a POST carries params.body
// (params.content_type, default application/json).
func (e httpRequest) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.action); err != nil {
		return nil, err
	}
	in := p.Intent()
	r := request{method: e.method, url: in.Target}
	if e.method == http.MethodPost {
		body, ct := in.Params["body"], cmp.Or(in.Params["content_type"], "application/json")
		r.body, r.header = &body, []action.Header{{Name: "Content-Type", Value: ct}}
	}
	return e.h.do(ctx, r)
}

// httpTemplate sends what its declared action renders (action.Template):
// method, URL, headers with the secrets injected here, and body; the
// final URL must be allowlisted; a redirect is not followed (it would
// carry the secrets' headers elsewhere), and every echo of a secret's
// value in the output is replaced by its placeholder.
type httpTemplate struct {
	h       *httpClient
	reg     action.Registration
	redact  *strings.Replacer
	secrets []string
}

var _ implementation = httpTemplate{}

func (httpTemplate) bind(r action.Registration, e *env) gate.Executor {
	loaded := map[string]string{}
	for _, n := range r.Executor.Template.SecretNames() {
		if s := r.Executor.Template.Secret(n); s != nil {
			loaded[n] = s.Value()
		}
	}
	redact, values := action.Redactor(loaded)
	return httpTemplate{h: e.http, reg: r, redact: redact, secrets: values}
}

// check refuses a registration whose secrets were not loaded: it could
// never run (New refuses it at startup, naming the secret).
func (e httpTemplate) check() error {
	t := e.reg.Executor.Template
	for _, n := range t.SecretNames() {
		if t.Secret(n) == nil {
			return fmt.Errorf("secret %s is not loaded", n)
		}
	}
	return nil
}

// Run renders the intent's request with the secrets and sends it.
func (e httpTemplate) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.reg.Type); err != nil {
		return nil, err
	}
	return e.send(ctx, p.Intent())
}

// send is Run's request, once the permit is checked.
func (e httpTemplate) send(ctx context.Context, in contract.ActionIntent) (map[string]string, error) {
	rd, err := e.reg.RenderRequest(in.Target, in.Params)
	if err != nil {
		// Render errors name fields and templates, never a secret's value
		// (a secret is only ever in a header, whose value is not shown).
		return nil, err
	}
	r := request{method: rd.Method, url: rd.URL, header: rd.Header, noRedirect: true, redact: e.redact, secrets: e.secrets}
	if e.reg.Executor.Template.HasBody() {
		r.body = &rd.Body
	}
	return e.h.do(ctx, r)
}
