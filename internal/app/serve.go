package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/metrics"
)

// parseServe parses and validates serve flags (shared by check-config);
// extra, when set, registers more flags (ServeHooks.Flags).
func parseServe(name string, env Env, args []string, extra func(*flag.FlagSet)) (ServeConfig, error) {
	var c ServeConfig
	h := cmdHelp{Name: "serve", Args: "[flags]",
		About: "Runs the HTTP API on --listen with the store under --data-dir (an embedded NATS JetStream server) or at --nats-url. " +
			"Both kill switches start engaged on a fresh store.",
		Example: "serve --data-dir ./data --listen 127.0.0.1:8080 --allow-host api.example.com"}
	if name == "check-config" {
		h = cmdHelp{Name: "check-config", Args: "[serve flags]",
			About:   "Validates serve's flags and checks what they name (the data dir, the NATS server, the TLS files), then exits; nothing is started or created.",
			Example: "check-config --data-dir ./data --listen 127.0.0.1:8080"}
	}
	fs := newCommand(env, h)
	c.register(fs.FlagSet)
	if extra != nil {
		extra(fs.FlagSet)
	}
	if _, err := fs.parse(args); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

func newLogger(env Env, format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(env.Stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(env.Stderr, nil))
}

func runServe(ctx context.Context, env Env, args []string) error {
	return ServeWith(ctx, env, args, ServeHooks{})
}

// ServeHooks let another command (cmd/exoarmur-lab) run this serve with
// more flags and its own sources of time and request IDs. The zero value is
// the production serve: the wall clock and random request IDs.
type ServeHooks struct {
	// Flags registers extra flags on serve's flag set.
	Flags func(fs *flag.FlagSet)
	// Sources is called once the flags are parsed and valid; a nil field
	// of what it returns keeps the production source.
	Sources func(c ServeConfig, logger *slog.Logger) (ServeSources, error)
}

// ServeSources replace serve's sources of time, request IDs and key
// randomness (cmd/exoarmur-lab's evidence runs; never the production
// binary's flags).
type ServeSources struct {
	Now       func() time.Time
	RequestID func() string
	// Rand is where API-created keys come from; it must be safe for
	// concurrent use.
	Rand io.Reader
}

// ServeWith is `serve` with hooks; runServe is ServeWith(ctx, env, args,
// ServeHooks{}).
func ServeWith(ctx context.Context, env Env, args []string, h ServeHooks) error {
	c, err := parseServe("serve", env, args, h.Flags)
	if err != nil {
		return err
	}
	logger := newLogger(env, c.LogFormat)
	d, requestID := prodDeps(logger), randomID
	if h.Sources != nil {
		src, err := h.Sources(c, logger)
		if err != nil {
			return err
		}
		if src.Now != nil {
			d.now = src.Now
		}
		if src.RequestID != nil {
			requestID = src.RequestID
		}
		if src.Rand != nil {
			d.rand = src.Rand
		}
	}
	rt, err := openRuntime(ctx, c, d)
	if err != nil {
		return err
	}
	defer rt.Close()

	if !c.NoWorker {
		go func() {
			if err := rt.gate.RunWorker(ctx, rt.keys); err != nil {
				logger.Error("background worker stopped", "err", err)
			}
		}()
	}
	// Every node sweeps for outcome records an execution could not write
	// (its node may have died since): gate.Sweep.
	go rt.gate.RunSweeper(ctx, sweepEvery)
	go rt.checkpoints.Run(ctx) // signs the chains' heads (--checkpoint-every, --checkpoint-interval)
	metrics.SetPendingApprovals(func() map[string]int {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return rt.approvals.PendingCounts(mctx, d.now())
	})
	acfg := api.Config{
		Gate: rt.gate, Switches: rt.switches, Policies: rt.policies, Approvals: rt.approvals, Access: rt.access, Audit: rt.audit, Bundles: rt.bundles, Actions: rt.actions,
		Ready: rt.store.Ready, RequestID: requestID, Logger: logger, Now: d.now, Checkpoints: rt.checkpoints, TenantReads: c.Limits.TenantReads,
	}
	if rt.mcp != nil {
		acfg.MCP = rt.mcp
		acfg.Upstreams = func() any { return rt.upstreams.Health() }
	}
	srv := api.New(acfg)
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	if c.Store.NATSURL == "" {
		// Where this node's API is, for the commands that find its data
		// dir in use (keys create goes through this API, never another).
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		if err := writeAPIURL(c.Store.DataDir, scheme+"://"+ln.Addr().String()); err != nil {
			logger.Warn("cannot note the API address in the data dir; keys create will not find this server", "err", err)
		}
		defer os.Remove(filepath.Join(c.Store.DataDir, apiURLFile))
	}
	if c.DebugAddr != "" {
		if err := serveDebug(ctx, logger, c.DebugAddr); err != nil {
			return err
		}
	}
	hs := api.NewHTTPServer(c.Listen, srv)
	serve := func() error { return hs.Serve(ln) }
	if c.TLSCert != "" {
		tc, err := tlsConfig(c)
		if err != nil {
			return err
		}
		hs.TLSConfig = tc
		serve = func() error { return hs.ServeTLS(ln, c.TLSCert, c.TLSKey) }
	}
	logger.Info("exoarmur serving", "addr", ln.Addr().String(), "tls", c.TLSCert != "", "mtls", c.ClientCA != "", "data_dir", c.Store.DataDir,
		"nats_url", c.Store.NATSURL, "sandbox_dir", c.SandboxDir, "allow_hosts", []string(c.AllowHosts), "node", c.Node, "actions_file", c.ActionsFile, "declared_actions", declaredNames(c.Actions),
		"policy_dir", c.PolicyDir, "policy_hash", rt.policy.Hash(), "shadow_policy_dir", c.ShadowPolicyDir)
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// declaredNames lists the types of r beyond the built-ins.
func declaredNames(r *action.Registry) []string {
	var names []string
	for _, reg := range r.List() {
		if _, builtin := action.Builtin().Lookup(reg.Type); !builtin {
			names = append(names, reg.Type)
		}
	}
	return names
}

// tlsConfig builds the server's TLS configuration: TLS 1.3 only; with
// --client-ca, every client must present a certificate that chains to it
// (its subject common name maps to a principal).
func tlsConfig(c ServeConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("--client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--client-ca %s: no PEM certificates", c.ClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// serveDebug serves the Go profiles on a separate loopback listener, never
// on the API's mux, so they are unreachable through the API port.
func serveDebug(ctx context.Context, logger *slog.Logger, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	go func() { _ = hs.Serve(ln) }()
	logger.Warn("debug profiles served (loopback, unauthenticated)", "addr", ln.Addr().String())
	return nil
}

// apiURLFile, in an embedded store's data dir, names the API of the serve
// that holds the dir (written after it listens, removed when it stops).
const apiURLFile = "api.url"

func writeAPIURL(dataDir, url string) error {
	return writeFileAtomic(filepath.Join(dataDir, apiURLFile), []byte(url+"\n"))
}

// servingURL is the API of the serve that holds dataDir, as it noted it.
func servingURL(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, apiURLFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// sweepEvery is how often each node sweeps for missing outcome records
// (gate.RunSweeper): the longest a chain waits for one whose node died.
const sweepEvery = 15 * time.Second
