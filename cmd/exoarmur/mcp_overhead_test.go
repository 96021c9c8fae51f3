package main_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMCPOverhead measures what a governed A0 tools/call adds over
// calling the same upstream directly, side by side in one run: a Go SDK
// upstream over Streamable HTTP, called by Go SDK clients directly and
// through the built server (authentication, access, the gate's propose
// and execute, every record in the audit), at 1 and 16 clients. It
// asserts only that every call succeeds; the figures are logged
// (docs/PERFORMANCE.md). EXOARMUR_MCP_CALLS sets the calls per client
// (default 50, a smoke run; the documented figures use 1000).
func TestMCPOverhead(t *testing.T) {
	calls := 50
	if v := os.Getenv("EXOARMUR_MCP_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EXOARMUR_MCP_CALLS=%q: want a positive number", v)
		}
		calls = n
	}
	up := buildUpstream(t)
	dir := t.TempDir()
	webAddr := freePort(t)
	web := exec.Command(up, "-http", webAddr)
	if err := web.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = web.Process.Kill(); _ = web.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get("http://" + webAddr + "/mcp"); err == nil {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upstream did not start")
		}
	}
	cfg := filepath.Join(dir, "mcp.yaml")
	must(t, os.WriteFile(cfg, []byte("servers:\n  web:\n    url: http://"+webAddr+"/mcp\n    tools: {echo: A0}\n"), 0o600))
	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "A0", "--tenant", "acme")
	addr := freePort(t)
	// The rate limits are per key and per tenant: raised so that the run
	// measures the gateway, not its limits.
	startReady(t, nil, dataDir, addr, "--mcp-config", cfg, "--rate-propose", "100000", "--rate-propose-tenant", "100000",
		"--rate-execute", "100000", "--rate-execute-tenant", "100000")
	goLive(t, addr, root)

	direct := func(t *testing.T) *sdk.ClientSession {
		c := sdk.NewClient(&sdk.Implementation{Name: "direct", Version: "1"}, nil)
		s, err := c.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: "http://" + webAddr + "/mcp", DisableStandaloneSSE: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	governed := func(t *testing.T) *sdk.ClientSession { return mcpSession(t, addr, bot) }
	run := func(t *testing.T, open func(*testing.T) *sdk.ClientSession, tool string, clients int) []time.Duration {
		sessions := make([]*sdk.ClientSession, clients)
		for i := range sessions {
			sessions[i] = open(t)
		}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for _, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([]time.Duration, 0, calls)
				for i := range calls {
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					start := time.Now()
					r, err := s.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: map[string]any{"text": fmt.Sprint("c", i)}})
					mine = append(mine, time.Since(start))
					cancel()
					if err != nil {
						errs <- fmt.Errorf("%s call %d: %v", tool, i, err)
						return
					}
					if r.IsError {
						errs <- fmt.Errorf("%s call %d: tool error %s", tool, i, textOf(r))
						return
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		slices.Sort(lat)
		return lat
	}
	pct := func(l []time.Duration, p int) time.Duration { return l[min(len(l)-1, len(l)*p/100)] }
	for _, clients := range []int{1, 16} {
		// Warm both paths, then measure them one after the other.
		run(t, direct, "echo", clients)
		run(t, governed, "mcp.web.echo", clients)
		d := run(t, direct, "echo", clients)
		g := run(t, governed, "mcp.web.echo", clients)
		t.Logf("MCP A0 tools/call, %d client(s), %d calls each: direct p50=%s p99=%s; through ExoArmur p50=%s p99=%s; overhead p50=%s p99=%s",
			clients, calls, pct(d, 50), pct(d, 99), pct(g, 50), pct(g, 99), pct(g, 50)-pct(d, 50), pct(g, 99)-pct(d, 99))
	}
}
