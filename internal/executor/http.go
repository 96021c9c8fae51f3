package executor

import (
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
	allow  []string
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

func (h *httpClient) do(ctx context.Context, method, target, body, contentType string) (map[string]string, error) {
	if err := h.allowed(target); err != nil {
		return nil, err
	}
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", method, target, err)
	}
	if method == http.MethodPost {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "exoarmur")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", method, target, err)
	}
	defer resp.Body.Close()
	// At most one byte more than fits: a larger body is cut, not read whole.
	b, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %q: read body: %w", method, target, err)
	}
	out := cut("body", b, resp.ContentLength, h.maxBody)
	out["status"] = strconv.Itoa(resp.StatusCode)
	if resp.StatusCode >= 400 {
		return out, fmt.Errorf("%s %q: http status %d", method, target, resp.StatusCode)
	}
	return out, nil
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
	return e.h.do(ctx, e.method, in.Target, in.Params["body"], in.Params["content_type"])
}
