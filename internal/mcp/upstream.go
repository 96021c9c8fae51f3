package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/action"
)

// The upstream connections. A Supervisor holds one connection per
// configured server (the official Go SDK's client: CommandTransport for a
// stdio server, StreamableClientTransport for an HTTP one, its headers
// injected here), connects at start and lists its tools (every page),
// and keeps it: a connection that ends is reconnected after a backoff
// (1 s doubling to 30 s). Its health is reported per server (/readyz).
// A call fails at once when the server is down (never queued), is bound
// by its context's deadline (the gate's --exec-timeout) and by
// CallTimeout, and its result is bounded in size by the executor
// (internal/executor), which turns an oversized one into a tool error.

// Timeouts of the upstream connections.
const (
	// ConnectTimeout bounds connecting to a server and listing its tools.
	ConnectTimeout = 30 * time.Second
	// CallTimeout bounds one tool call when its context has no earlier
	// deadline.
	CallTimeout = 5 * time.Minute
	minBackoff  = time.Second
	maxBackoff  = 30 * time.Second
)

// ErrDown is returned for a call to a server that is not connected.
var ErrDown = errors.New("the upstream MCP server is not connected")

// Health is one upstream's state, as /readyz reports it.
type Health struct {
	State string `json:"state"` // "up", "down", "connecting"
	Since string `json:"since"`
	Error string `json:"error,omitempty"`
	Tools int    `json:"tools"`
	// Restarts counts the connections after the first.
	Restarts int `json:"restarts"`
}

// Supervisor keeps the connections to the upstream servers.
type Supervisor struct {
	logger    *slog.Logger
	upstreams map[string]*upstream
	order     []string
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	lookupEnv func(string) (string, bool)
}

type upstream struct {
	cfg Server
	sup *Supervisor

	mu       sync.Mutex
	session  *sdk.ClientSession
	tools    []*sdk.Tool // as listed at the first successful connection
	listed   bool
	state    string
	since    time.Time
	lastErr  string
	restarts int
	// redact replaces the server's secrets (its headers' and env's) in
	// what the server says about itself: errors, standard error.
	redact *strings.Replacer
	forms  []string // every form redact removes
}

// SupervisorOptions configure Start.
type SupervisorOptions struct {
	Logger *slog.Logger
	// LookupEnv reads this process's PATH and HOME for stdio servers
	// (default os.LookupEnv).
	LookupEnv func(string) (string, bool)
}

// Start connects to every server of c (each within ConnectTimeout, in
// parallel) and lists its tools, then supervises the connections until
// Close. A server that cannot be reached at start is reported down and
// retried in the background; its tools are not known (Tools lists none
// for it) until it answers.
func Start(ctx context.Context, c *Config, opt SupervisorOptions) *Supervisor {
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Supervisor{logger: logger, upstreams: map[string]*upstream{}, lookupEnv: opt.LookupEnv}
	if s.lookupEnv == nil {
		s.lookupEnv = os.LookupEnv
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	var first sync.WaitGroup
	for _, srv := range c.Servers {
		u := &upstream{cfg: srv, sup: s, state: "connecting", since: time.Now()}
		if secrets := srv.Secrets(); len(secrets) > 0 {
			values := map[string]string{}
			for _, sec := range secrets {
				values[sec.Name()] = sec.Value()
			}
			u.redact, u.forms = action.Redactor(values)
		}
		s.upstreams[srv.Name] = u
		s.order = append(s.order, srv.Name)
		first.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			u.run(rctx, first.Done)
		}()
	}
	first.Wait()
	return s
}

// Close ends every connection (a stdio server's stdin is closed, then it
// is terminated) and stops the supervision.
func (s *Supervisor) Close() {
	if s == nil {
		return
	}
	s.cancel()
	for _, u := range s.upstreams {
		u.mu.Lock()
		if u.session != nil {
			_ = u.session.Close()
		}
		u.mu.Unlock()
	}
	s.wg.Wait()
}

// Health reports each upstream's state, by server name.
func (s *Supervisor) Health() map[string]Health {
	out := map[string]Health{}
	if s == nil {
		return out
	}
	for name, u := range s.upstreams {
		u.mu.Lock()
		out[name] = Health{State: u.state, Since: u.since.UTC().Format(time.RFC3339), Error: u.lastErr, Tools: len(u.tools), Restarts: u.restarts}
		u.mu.Unlock()
	}
	return out
}

// ListedTool is an upstream tool as listed.
type ListedTool struct {
	Server string
	Tool   *sdk.Tool
}

// Tools lists the tools each server listed at its first connection, by
// server then as listed.
func (s *Supervisor) Tools() []ListedTool {
	var out []ListedTool
	if s == nil {
		return out
	}
	for _, name := range s.order {
		u := s.upstreams[name]
		u.mu.Lock()
		for _, t := range u.tools {
			out = append(out, ListedTool{Server: name, Tool: t})
		}
		u.mu.Unlock()
	}
	return out
}

// Server returns the configuration of a server.
func (s *Supervisor) Server(name string) (Server, bool) {
	if s == nil {
		return Server{}, false
	}
	u, ok := s.upstreams[name]
	if !ok {
		return Server{}, false
	}
	return u.cfg, true
}

// Call calls a tool of a server with its arguments (a JSON object) and
// returns the result as the server sent it. It fails at once (ErrDown)
// when the server is not connected; a connection that ends during the
// call fails it (the tool may have run).
func (s *Supervisor) Call(ctx context.Context, server, tool string, arguments json.RawMessage) (*sdk.CallToolResult, error) {
	u, ok := s.upstreams[server]
	if !ok {
		return nil, fmt.Errorf("no upstream MCP server %q", server)
	}
	u.mu.Lock()
	session := u.session
	u.mu.Unlock()
	if session == nil {
		return nil, fmt.Errorf("%s: %w", server, ErrDown)
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CallTimeout)
		defer cancel()
	}
	res, err := session.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: arguments})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream %s: tool %s: no answer before the deadline; the tool may have run: %w", server, tool, ctx.Err())
		}
		return nil, fmt.Errorf("upstream %s: tool %s: the call failed; the tool may have run: %w", server, tool, err)
	}
	return res, nil
}

// run connects, waits for the connection to end, and reconnects after a
// backoff, until ctx ends. started is called once, after the first
// attempt.
func (u *upstream) run(ctx context.Context, started func()) {
	once := sync.OnceFunc(started)
	defer once()
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		session, err := u.connect(ctx)
		if err != nil {
			u.set("down", err)
			u.sup.logger.Error("mcp upstream: connect failed", "server", u.cfg.Name, "transport", u.cfg.Transport(), "err", u.redacted(err.Error()), "retry_in", backoff)
			once()
		} else {
			backoff = minBackoff
			u.mu.Lock()
			u.session = session
			if attempt > 0 {
				u.restarts++
			}
			u.mu.Unlock()
			u.set("up", nil)
			u.sup.logger.Info("mcp upstream connected", "server", u.cfg.Name, "transport", u.cfg.Transport(), "tools", len(u.tools))
			once()
			werr := session.Wait()
			u.mu.Lock()
			u.session = nil
			u.mu.Unlock()
			if ctx.Err() != nil {
				u.set("down", errors.New("closed"))
				return
			}
			if werr == nil {
				werr = errors.New("the connection ended")
			}
			u.set("down", werr)
			u.sup.logger.Error("mcp upstream: connection lost", "server", u.cfg.Name, "err", u.redacted(fmt.Sprint(werr)), "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (u *upstream) set(state string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.since = time.Now()
	}
	u.state = state
	u.lastErr = ""
	if err != nil {
		u.lastErr = u.redacted(err.Error())
	}
}

// connect opens a session and lists the tools (the first time; later
// connections compare and log a change: the action registry is built
// once, at start).
func (u *upstream) connect(ctx context.Context) (*sdk.ClientSession, error) {
	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	t, err := u.transport()
	if err != nil {
		return nil, err
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "exoarmur", Version: "1"}, nil)
	session, err := client.Connect(cctx, t, nil)
	if err != nil {
		return nil, err
	}
	var tools []*sdk.Tool
	for tool, err := range session.Tools(cctx, nil) {
		if err != nil {
			_ = session.Close()
			return nil, fmt.Errorf("list tools: %w", err)
		}
		tools = append(tools, tool)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.listed {
		u.tools, u.listed = tools, true
	} else if !sameTools(u.tools, tools) {
		u.sup.logger.Warn("mcp upstream: its tools changed since start; the gateway keeps the tools it registered at start (restart it to register the new list)", "server", u.cfg.Name)
	}
	return session, nil
}

func sameTools(a, b []*sdk.Tool) bool {
	names := func(ts []*sdk.Tool) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(names(a), names(b))
}

func (u *upstream) transport() (sdk.Transport, error) {
	c := u.cfg
	if c.URL != "" {
		h, err := c.header()
		if err != nil {
			return nil, err
		}
		return &sdk.StreamableClientTransport{
			Endpoint: c.URL,
			HTTPClient: &http.Client{Transport: headerTransport{base: http.DefaultTransport, header: h, limit: MaxResponseBytes},
				// A redirect is the answer: the injected headers never
				// follow it to another host.
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			DisableStandaloneSSE: true,
		}, nil
	}
	env, err := c.Environment(u.sup.lookupEnv)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.Command[0], c.Command[1:]...)
	// Never nil (exec would pass os.Environ()): no credential of the
	// gateway reaches an upstream, even with no PATH or HOME to give.
	cmd.Env = append([]string{}, env...)
	cmd.Stderr = &stderrLog{logger: u.sup.logger, server: c.Name, redact: u.redacted}
	return &sdk.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}, nil
}

// headerTransport adds the configured headers to every request to an
// HTTP server (server side: the agent never sees them).
type headerTransport struct {
	base   http.RoundTripper
	header http.Header
	limit  int64 // the bytes of one response body read at most
}

// MaxResponseBytes bounds one response body of an HTTP server (the SDK
// reads an answer whole): a larger one fails the call instead of filling
// the gateway's memory. Results are bounded again, smaller, by what a
// record holds.
const MaxResponseBytes = 32 << 20

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range h.header {
		r.Header[k] = vs
	}
	resp, err := h.base.RoundTrip(r)
	if err == nil && h.limit > 0 {
		resp.Body = &limitedBody{rc: resp.Body, left: h.limit}
	}
	return resp, err
}

// ErrResponseTooLarge: an HTTP server answered more than MaxResponseBytes.
var ErrResponseTooLarge = errors.New("mcp upstream: response larger than the gateway reads")

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, ErrResponseTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedBody) Close() error { return l.rc.Close() }

// redacted is text with the server's secrets replaced by placeholders,
// and a secret's beginning cut at the end dropped.
func (u *upstream) redacted(text string) string {
	if u.redact == nil {
		return text
	}
	return string(action.DropSecretPrefix([]byte(u.redact.Replace(text)), u.forms))
}

// stderrLog logs a stdio server's standard error, line by line, each
// line cut at 512 bytes, at most 200 lines per connection.
type stderrLog struct {
	logger *slog.Logger
	server string
	redact func(string) string
	mu     sync.Mutex
	line   []byte
	lines  int
}

func (s *stderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			if len(s.line) < 512 {
				s.line = append(s.line, b)
			}
			continue
		}
		if s.lines < 200 {
			s.logger.Info("mcp upstream stderr", "server", s.server, "line", s.redact(string(s.line)))
		}
		s.lines++
		s.line = s.line[:0]
	}
	return len(p), nil
}

// CallTool is Call with the result as JSON (what the executor kind
// mcp-tool records and the agent gets back).
func (s *Supervisor) CallTool(ctx context.Context, server, tool string, arguments json.RawMessage) (json.RawMessage, bool, error) {
	res, err := s.Call(ctx, server, tool, arguments)
	if err != nil {
		return nil, false, err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, false, fmt.Errorf("upstream %s: tool %s: encode its result: %w", server, tool, err)
	}
	return b, res.IsError, nil
}

// Secrets returns the secrets injected into a server's connection, by
// name (the executor redacts their echo from a result).
func (s *Supervisor) Secrets(server string) map[string]string {
	out := map[string]string{}
	if cfg, ok := s.Server(server); ok {
		for _, sec := range cfg.Secrets() {
			out[sec.Name()] = sec.Value()
		}
	}
	return out
}
