// Package bench is ExoArmur's load harness: it starts a real server process
// of the built binary on loopback with a fresh data dir, drives it over HTTP
// with N keep-alive clients bounded by duration and count, and reports
// throughput, latency percentiles from an HDR histogram
// (github.com/HdrHistogram/hdrhistogram-go, the standard implementation of
// Gil Tene's HdrHistogram in Go) and the server's RSS. It also measures
// replay verification throughput on a generated chain.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
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
	// ProfileDir, when set, receives the server's CPU profile of each
	// scenario (<scenario>.cpu.pprof) and a heap profile after it
	// (<scenario>.heap.pprof), fetched from its --debug-addr listener.
	ProfileDir string
}

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
	srv, err := startServer(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.cmd.Process.Kill(); _ = srv.cmd.Wait() }()
	tr := &http.Transport{MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients * 2, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for _, path := range []string{"/v1/killswitch", "/v1/tenants/acme/killswitch", "/v1/tenants/beta/killswitch"} {
		if code, body := call(hc, "PUT", srv.base+path, srv.keys["admin"], map[string]any{"engaged": false, "reason": "bench"}); code != 200 {
			return nil, fmt.Errorf("disengage %s: HTTP %d %s", path, code, body)
		}
	}
	var out []Result
	for _, sc := range cfg.Scenarios {
		if sc == "blocked" {
			call(hc, "PUT", srv.base+"/v1/tenants/acme/killswitch", srv.keys["admin"], map[string]any{"engaged": true, "reason": "bench: blocked scenario"})
		}
		prof := srv.startProfile(cfg, sc)
		res, err := runScenario(ctx, cfg, hc, srv, sc)
		if perr := prof(); perr != nil {
			return out, perr
		}
		if sc == "blocked" {
			call(hc, "PUT", srv.base+"/v1/tenants/acme/killswitch", srv.keys["admin"], map[string]any{"engaged": false, "reason": "bench: done"})
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

func startServer(ctx context.Context, cfg Config, dir string) (*server, error) {
	data := filepath.Join(dir, "data")
	keys := map[string]string{}
	for _, k := range []struct{ name, role, tenants string }{{"admin", "admin", "acme,beta,system"}, {"acme", "agent", "acme"}, {"beta", "agent", "beta"}} {
		args := []string{"keys", "create", "--data-dir", data, "--name", k.name, "--role", k.role, "--actions", "*"}
		for _, t := range strings.Split(k.tenants, ",") {
			args = append(args, "--tenant", t)
		}
		out, err := exec.CommandContext(ctx, cfg.Binary, args...).Output()
		if err != nil {
			return nil, fmt.Errorf("keys create: %w", err)
		}
		keys[k.name] = strings.TrimSpace(string(out))
	}
	// A file for the A0 fs.read executions to read, in each tenant's sandbox.
	for _, t := range []string{"acme", "beta"} {
		if err := os.MkdirAll(filepath.Join(data, "sandbox", t), 0o750); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(data, "sandbox", t, "bench.txt"), []byte("bench\n"), 0o640); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"serve", "--data-dir", data, "--listen", addr, "--sync", cfg.Sync, "--log-format", "text", "--no-worker",
		"--retention", cfg.Retention.String()}
	if cfg.Retention > 0 {
		args = append(args, "--approval-ttl", cfg.Retention.String()) // at most the retention
	}
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("server not ready")
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

func call(hc *http.Client, method, url, key string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil {
		return -1, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func runScenario(ctx context.Context, cfg Config, hc *http.Client, srv *server, sc string) (Result, error) {
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
				key := srv.keys[tn]
				idem := fmt.Sprintf("%s-%d-%d", sc, c, i)
				t0 := time.Now()
				ok := one(hc, srv.base, tn, key, idem, sc)
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
// expected outcome.
func one(hc *http.Client, base, tn, key, idem, sc string) bool {
	code, body := call(hc, "POST", base+"/v1/tenants/"+tn+"/intents", key, map[string]any{"action": "fs.read", "target": "bench.txt", "idempotency_key": idem})
	if code != 201 {
		return false
	}
	if sc == "propose" {
		return true
	}
	var v struct {
		Intent struct {
			ID string `json:"id"`
		} `json:"intent"`
	}
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	code, _ = call(hc, "POST", base+"/v1/tenants/"+tn+"/intents/"+v.Intent.ID+"/execute", key, nil)
	if sc == "blocked" {
		return code == 403
	}
	return code == 200
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
