package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/exoarmur/exoarmur/internal/api"
)

// parseServe parses and validates serve flags (shared by check-config).
func parseServe(name string, env Env, args []string) (ServeConfig, error) {
	var c ServeConfig
	fs := newFlagSet(name, env)
	c.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

func runCheckConfig(ctx context.Context, env Env, args []string) error {
	if _, err := parseServe("check-config", env, args); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "configuration OK")
	return nil
}

func newLogger(env Env, format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(env.Stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(env.Stderr, nil))
}

func runServe(ctx context.Context, env Env, args []string) error {
	c, err := parseServe("serve", env, args)
	if err != nil {
		return err
	}
	logger := newLogger(env, c.LogFormat)
	rt, err := openRuntime(ctx, c, prodDeps(logger))
	if err != nil {
		return err
	}
	defer rt.Close()

	if !c.NoWorker {
		go func() {
			if err := rt.gate.RunWorker(ctx, rt.store.Work, rt.keys); err != nil {
				logger.Error("background worker stopped", "err", err)
			}
		}()
	}
	srv := api.New(api.Config{
		Gate: rt.gate, Switches: rt.switches, Approvals: rt.approvals, Keys: rt.keys, Audit: rt.audit,
		Ready: rt.store.Ready, RequestID: randomID, Logger: logger, Now: time.Now,
	})
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	hs := api.NewHTTPServer(c.Listen, srv)
	logger.Info("exoarmur serving", "addr", ln.Addr().String(), "data_dir", c.Store.DataDir,
		"nats_url", c.Store.NATSURL, "sandbox_dir", c.SandboxDir, "allow_hosts", []string(c.AllowHosts), "node", c.Node)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
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
