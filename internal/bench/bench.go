// Package bench is ExoArmur's load harness: it starts a real server process
// of the built binary on loopback with a fresh data dir, drives it over HTTP
// with N keep-alive clients bounded by duration and count, and reports
// throughput, latency percentiles from an HDR histogram
// (github.com/HdrHistogram/hdrhistogram-go, the standard implementation of
// Gil Tene's HdrHistogram in Go) and the server's RSS. Every API call goes
// through the typed client (internal/api/client) over one shared
// keep-alive transport. It also measures replay verification throughput on
// a generated chain.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// Config of a load run.
type Config struct {
	Binary    string // the exoarmur binary to start as the server
	Scenarios []string
	Clients   int
	Duration  time.Duration
	Max       int64         // stop after this many operations per scenario
	Sync      string        // default | always
	Retention time.Duration // the server's --retention (0: keep for good)
	Log       io.Writer
	// Cluster, when not 0, runs the server on a JetStream cluster of this
	// many `exoarmur nats` processes of Binary (on loopback, started and
	// stopped by Run) instead of its embedded NATS, with Replicas
	// replicas of every stream and bucket.
	Cluster  int
	Replicas int
	// ProfileDir, when set, receives the server's CPU profile of each
	// scenario (<scenario>.cpu.pprof) and a heap profile after it
	// (<scenario>.heap.pprof), fetched from its --debug-addr listener.
	ProfileDir string
	// Limits keeps the server's default rate limits and tenant quotas;
	// without it they are off (--rate-* 0, --quota-* 0), so the harness
	// measures what a node sustains, not the policy.
	Limits bool
	// ServerArgs are more flags for the server's serve (e.g.
	// --checkpoint-every=0 to measure without checkpoints).
	ServerArgs []string
}

// limitsOff turns every rate limit and quota of serve off.
var limitsOff = []string{"--rate-propose", "0", "--rate-propose-tenant", "0", "--rate-execute", "0", "--rate-execute-tenant", "0",
	"--rate-approve", "0", "--rate-approve-tenant", "0", "--quota-pending-intents", "0", "--quota-pending-approvals", "0", "--quota-stored-bytes", "0"}

// Result of one scenario.
type Result struct {
	Scenario   string  `json:"scenario"`
	Clients    int     `json:"clients"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	P50us      int64   `json:"p50_us"`
	P90us      int64   `json:"p90_us"`
	P99us      int64   `json:"p99_us"`
	P999us     int64   `json:"p999_us"`
	MaxUs      int64   `json:"max_us"`
	ServerRSS  int64   `json:"server_rss_mb"`
	ServerPeak int64   `json:"server_peak_rss_mb"`
	Sync       string  `json:"sync"`
	Retention  string  `json:"retention"` // the server's --retention
}

// Scenarios known to Run.
var Scenarios = []string{"propose", "execute", "blocked", "mixed"}

type server struct {
	cmd   *exec.Cmd
	base  string
	debug string // pprof base URL, empty unless profiling
	keys  map[string]string
}

// Run starts a server and runs each scenario against it.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	dir, err := os.MkdirTemp("", "exoarmur-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	natsURL := ""
	if cfg.Cluster > 0 {
		url, stop, err := startCluster(ctx, cfg.Binary, dir, cfg.Cluster)
		if err != nil {
			return nil, err
		}
		defer stop()
		natsURL = url
	}
	srv, err := startServer(ctx, cfg, dir, natsURL)
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.cmd.Process.Kill(); _ = srv.cmd.Wait() }()
	tr := &http.Transport{MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients * 2, IdleConnTimeout: time.Minute}
	cl, err := srv.clients(&http.Client{Transport: tr, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	for _, t := range []string{"", "acme", "beta"} {
		if err := setSwitch(ctx, cl["admin"], t, false, "bench"); err != nil {
			return nil, err
		}
	}
	var out []Result
	for _, sc := range cfg.Scenarios {
		if sc == "blocked" {
			_ = setSwitch(ctx, cl["admin"], "acme", true, "bench: blocked scenario")
		}
		prof := srv.startProfile(cfg, sc)
		res, err := runScenario(ctx, cfg, cl, sc)
		if perr := prof(); perr != nil {
			return out, perr
		}
		if sc == "blocked" {
			_ = setSwitch(ctx, cl["admin"], "acme", false, "bench: done")
		}
		if err != nil {
			return out, err
		}
		res.ServerRSS, res.ServerPeak = rss(srv.cmd.Process.Pid)
		res.Sync, res.Retention = cfg.Sync, cfg.Retention.String()
		fmt.Fprintf(cfg.Log, "%-8s %6d ops %8.0f/s  p50 %6dus p90 %6dus p99 %6dus p99.9 %6dus max %7dus  errors %d  rss %d MB (peak %d MB)\n",
			res.Scenario, res.Ops, res.PerSecond, res.P50us, res.P90us, res.P99us, res.P999us, res.MaxUs, res.Errors, res.ServerRSS, res.ServerPeak)
		out = append(out, res)
	}
	return out, nil
}

func startServer(ctx context.Context, cfg Config, dir, natsURL string) (*server, error) {
	data := filepath.Join(dir, "data")
	store := []string{"--data-dir", data}
	sandbox := filepath.Join(data, "sandbox")
	if natsURL != "" {
		store = []string{"--nats-url", natsURL, "--nats-replicas", strconv.Itoa(cfg.Replicas)}
		sandbox = filepath.Join(dir, "sandbox")
	}
	keys := map[string]string{}
	for _, k := range []struct{ name, role, tenants string }{{"admin", "admin", "acme,beta,system"}, {"acme", "agent", "acme"}, {"beta", "agent", "beta"}, {"acme-auditor", "auditor", "acme"}} {
		args := append([]string{"keys", "create"}, store...)
		args = append(args, "--name", k.name, "--role", k.role, "--actions", "*")
		for _, t := range strings.Split(k.tenants, ",") {
			args = append(args, "--tenant", t)
		}
		var out []byte
		var err error
		// A cluster answers once its members elected their leaders.
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			if out, err = exec.CommandContext(ctx, cfg.Binary, args...).Output(); err == nil || natsURL == "" || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return nil, fmt.Errorf("keys create: %w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return nil, fmt.Errorf("keys create: %w", err)
		}
		keys[k.name] = strings.TrimSpace(string(out))
	}
	// A file for the A0 fs.read executions to read, in each tenant's sandbox.
	for _, t := range []string{"acme", "beta"} {
		if err := os.MkdirAll(filepath.Join(sandbox, t), 0o750); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(sandbox, t, "bench.txt"), []byte("bench\n"), 0o640); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"serve", "--listen", addr, "--log-format", "text", "--no-worker", "--retention", cfg.Retention.String()}, store...)
	if natsURL == "" {
		args = append(args, "--sync", cfg.Sync)
	} else {
		args = append(args, "--sandbox-dir", sandbox)
	}
	if cfg.Retention > 0 {
		args = append(args, "--approval-ttl", cfg.Retention.String()) // at most the retention
	}
	if !cfg.Limits {
		args = append(args, limitsOff...)
	}
	args = append(args, cfg.ServerArgs...)
	debug := ""
	if cfg.ProfileDir != "" {
		dl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		debug = dl.Addr().String()
		dl.Close()
		args = append(args, "--debug-addr", debug)
		debug = "http://" + debug
	}
	cmd := exec.Command(cfg.Binary, args...)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	base := "http://" + addr
	api, err := client.New(base)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := api.Ready(rctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("server not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &server{cmd: cmd, base: base, debug: debug, keys: keys}, nil
}

// startProfile starts fetching a CPU profile of the server for the length
// of a scenario; the returned function waits for it and saves it with a
// heap profile. Without a profile dir it does nothing.
func (s *server) startProfile(cfg Config, sc string) func() error {
	if s.debug == "" {
		return func() error { return nil }
	}
	secs := max(int(cfg.Duration.Seconds())-1, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- fetch(s.debug+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), filepath.Join(cfg.ProfileDir, sc+".cpu.pprof"))
	}()
	return func() error {
		if err := <-errc; err != nil {
			return fmt.Errorf("cpu profile of %s: %w", sc, err)
		}
		if err := fetch(s.debug+"/debug/pprof/heap", filepath.Join(cfg.ProfileDir, sc+".heap.pprof")); err != nil {
			return fmt.Errorf("heap profile of %s: %w", sc, err)
		}
		return nil
	}
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// clients returns a typed API client per principal (admin, acme, beta),
// all sending through hc and so sharing its keep-alive connections.
func (s *server) clients(hc *http.Client) (map[string]*client.Client, error) {
	api, err := client.New(s.base, client.WithHTTPClient(hc), client.WithUserAgent("exoarmur-bench"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]*client.Client, len(s.keys))
	for name, key := range s.keys {
		out[name] = api.With(client.WithAPIKey(key))
	}
	return out, nil
}

// setSwitch engages or disengages the global switch (t == "") or a
// tenant's, and fails unless the serving node confirmed it (HTTP 200).
func setSwitch(ctx context.Context, admin *client.Client, t string, engaged bool, reason string) error {
	scope := t
	if scope == "" {
		scope = "global"
	}
	_, confirmed, err := admin.SetKillSwitch(ctx, t, contract.KillSwitchRequest{Engaged: engaged, Reason: reason})
	if err != nil {
		return fmt.Errorf("kill switch %s: %w", scope, err)
	}
	if !confirmed {
		return fmt.Errorf("kill switch %s: HTTP 202, the serving node did not confirm the change", scope)
	}
	return nil
}

func runScenario(ctx context.Context, cfg Config, cl map[string]*client.Client, sc string) (Result, error) {
	var ops, errs atomic.Int64
	var wg sync.WaitGroup
	hists := make([]*hdrhistogram.Histogram, cfg.Clients)
	deadline := time.Now().Add(cfg.Duration)
	start := time.Now()
	for c := range cfg.Clients {
		hists[c] = hdrhistogram.New(1, 60_000_000, 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if ctx.Err() != nil || time.Now().After(deadline) || ops.Load() >= cfg.Max {
					return
				}
				tn := "acme"
				if sc == "mixed" && i%2 == 1 {
					tn = "beta"
				}
				idem := fmt.Sprintf("%s-%d-%d", sc, c, i)
				t0 := time.Now()
				ok := one(ctx, cl[tn], tn, idem, sc)
				hists[c].RecordValue(max(time.Since(t0).Microseconds(), 1))
				ops.Add(1)
				if !ok {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	h := hdrhistogram.New(1, 60_000_000, 3)
	for _, x := range hists {
		h.Merge(x)
	}
	return Result{Scenario: sc, Clients: cfg.Clients, Ops: ops.Load(), Errors: errs.Load(), Seconds: elapsed, PerSecond: float64(ops.Load()) / elapsed,
		P50us: h.ValueAtQuantile(50), P90us: h.ValueAtQuantile(90), P99us: h.ValueAtQuantile(99), P999us: h.ValueAtQuantile(99.9), MaxUs: h.Max()}, nil
}

// one performs one operation of a scenario and reports whether it had the
// expected outcome: the intent created (HTTP 201), then, unless the
// scenario only proposes, executed (200) or, in the blocked scenario,
// refused (403).
func one(ctx context.Context, c *client.Client, tn, idem, sc string) bool {
	v, created, err := c.Propose(ctx, tn, contract.IntentRequest{Action: action.FSRead, Target: "bench.txt", IdempotencyKey: idem})
	if err != nil || !created {
		return false
	}
	if sc == "propose" {
		return true
	}
	_, err = c.Execute(ctx, tn, v.Intent.ID)
	if sc == "blocked" {
		var ce *client.Error
		return errors.As(err, &ce) && ce.Status == http.StatusForbidden
	}
	return err == nil
}

// rss returns the current and peak resident set size of pid in MB (Linux).
func rss(pid int) (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

// startCluster starts n `exoarmur nats` processes of binary on loopback,
// each routed to the others, with data dirs under dir, and returns their
// client URLs as --nats-url takes them and a function that stops them.
func startCluster(ctx context.Context, binary, dir string, n int) (string, func(), error) {
	free := func() (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}
	clients, routes := make([]string, n), make([]string, n)
	for i := range n {
		var err error
		if clients[i], err = free(); err != nil {
			return "", nil, err
		}
		if routes[i], err = free(); err != nil {
			return "", nil, err
		}
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	var urls []string
	for i := range n {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, "nats-route://"+r)
			}
		}
		cmd := exec.CommandContext(ctx, binary, "nats", "--data-dir", filepath.Join(dir, fmt.Sprintf("nats%d", i+1)), "--listen", clients[i],
			"--name", fmt.Sprintf("n%d", i+1), "--cluster-listen", routes[i], "--routes", strings.Join(others, ","))
		if err := cmd.Start(); err != nil {
			stop()
			return "", nil, err
		}
		cmds = append(cmds, cmd)
		urls = append(urls, "nats://"+clients[i])
	}
	return strings.Join(urls, ","), stop, nil
}
