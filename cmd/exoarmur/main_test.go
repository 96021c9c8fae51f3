package main_test

// End-to-end tests against real processes of the built binary: Gate 1
// (durable audit across kill -9) and Gate 2 (idempotency across restart).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/exoarmur once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exoarmur-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "exoarmur")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("exoarmur %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
}

// syncBuffer collects a child process's output; the test may read it while
// the process still writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startServer(t *testing.T, dataDir, addr string, extra ...string) *server {
	t.Helper()
	s := startServerNoWait(t, dataDir, addr, extra...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startServerNoWait starts `exoarmur serve` and returns at once.
func startServerNoWait(t *testing.T, dataDir, addr string, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--listen", addr}, extra...)
	if dataDir != "" {
		args = append(args, "--data-dir", dataDir)
	}
	cmd := exec.Command(binary(t), args...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, addr: addr, logs: logs}
	t.Cleanup(func() { s.kill() })
	return s
}

// kill sends SIGKILL: no shutdown code runs.
func (s *server) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
}

func (s *server) do(method, path, key string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// createKeys makes an agent key and an admin key through the CLI; store
// is --data-dir D or --nats-url U.
func createKeys(t *testing.T, store ...string) (agent, admin string) {
	t.Helper()
	mk := func(role, actions string, tenants ...string) string {
		args := append([]string{"keys", "create"}, store...)
		args = append(args, "--name", "e2e-"+role, "--role", role, "--tenant", "acme", "--actions", actions)
		for _, tn := range tenants {
			args = append(args, "--tenant", tn)
		}
		key := strings.TrimSpace(run(t, args...))
		if !strings.HasPrefix(key, "exo_") {
			t.Fatalf("keys create printed %q", key)
		}
		return key
	}
	// The admin approves side effects (its grants must cover them) and
	// flips the global switch (the system grant).
	return mk("agent", "*"), mk("admin", "*", "system")
}

func createKey(t *testing.T, dataDir string) string {
	t.Helper()
	agent, admin := createKeys(t, "--data-dir", dataDir)
	adminKeys[dataDir] = admin
	return agent
}

// adminKeys remembers each data dir's admin key for goLive.
var adminKeys = map[string]string{}

// killswitch runs the CLI against a server.
func killswitch(t *testing.T, addr, key string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"killswitch"}, append(args, "--server", "http://"+addr)...)...)
	cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+key)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("killswitch %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// goLive disengages the global and acme switches (engaged on a fresh store).
func goLive(t *testing.T, addr, adminKey string) {
	t.Helper()
	killswitch(t, addr, adminKey, "disengage", "--reason", "e2e go live")
	killswitch(t, addr, adminKey, "disengage", "--tenant", "acme", "--reason", "e2e go live")
}

// approveVia has key (an operator or admin, not the proposer) approve an intent.
func (s *server) approveVia(key, tn, id string) {
	s.t.Helper()
	if code, m := s.do("POST", "/v1/tenants/"+tn+"/intents/"+id+"/approvals", key, map[string]string{"decision": "approve", "reason": "e2e"}); code != 200 {
		s.t.Fatalf("approve %s: %d %v", id, code, m)
	}
}

func intentID(m map[string]any) string {
	in, _ := m["intent"].(map[string]any)
	id, _ := in["id"].(string)
	return id
}

// TestGate1DurableAuditAcrossKill: N acknowledged proposals and executions
// survive SIGKILL of the server; the chain verifies after restart.
func TestGate1DurableAuditAcrossKill(t *testing.T) {
	dataDir := t.TempDir()
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, adminKeys[dataDir])
	const n = 25
	var ids []string
	for i := range n {
		code, m := srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{
			"action": "fs.write", "target": fmt.Sprintf("gate1/f%02d.txt", i), "params": map[string]string{"content": fmt.Sprint("v", i)},
			"idempotency_key": fmt.Sprintf("gate1-%02d", i),
		})
		if code != 201 {
			t.Fatalf("propose %d: %d %v", i, code, m)
		}
		id := intentID(m)
		srv.approveVia(adminKeys[dataDir], "acme", id)
		if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", key, nil); code != 200 {
			t.Fatalf("execute %d: %d %v", i, code, m)
		}
		ids = append(ids, id)
	}
	srv.kill()

	srv = startServer(t, dataDir, addr)
	for _, id := range ids {
		code, m := srv.do("GET", "/v1/tenants/acme/intents/"+id, key, nil)
		if code != 200 || m["state"] != "succeeded" {
			t.Fatalf("after kill -9, intent %s: %d %v", id, code, m)
		}
	}
	code, rep := srv.do("GET", "/v1/tenants/acme/audit/verify", key, nil)
	// per intent: proposed, approval requested, granted, allowed, approval executed, started, succeeded; + the switch change
	if code != 200 || rep["pass"] != true || rep["records"] != float64(7*n+1) {
		t.Fatalf("verify after restart: %d %v", code, rep)
	}
	srv.kill()
	// The offline CLI agrees.
	out := run(t, "audit", "verify", "--data-dir", dataDir, "--tenant", "acme")
	if !strings.Contains(out, `"pass":true`) {
		t.Fatalf("audit verify: %s", out)
	}
}

// TestGate2IdempotencyAcrossRestart: the same execute before and after a
// restart causes the side effect exactly once (counted at an HTTP sink), and
// an execution cut by kill -9 mid-flight is in doubt, never re-run.
func TestGate2IdempotencyAcrossRestart(t *testing.T) {
	var hits atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/hang" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	defer sink.Close()
	host := strings.TrimPrefix(sink.URL, "http://")

	dataDir := t.TempDir()
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--allow-host", host, "--lease", "1s")
	goLive(t, addr, adminKeys[dataDir])

	_, m := srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{
		"action": "http.post", "target": sink.URL + "/effect", "params": map[string]string{"body": `{"n":1}`}, "idempotency_key": "gate2-once",
	})
	id := intentID(m)
	srv.approveVia(adminKeys[dataDir], "acme", id)
	if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", key, nil); code != 200 {
		t.Fatalf("execute: %d %v", code, m)
	}
	if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", key, nil); code != 200 || m["duplicate"] != true {
		t.Fatalf("repeat: %d %v", code, m)
	}
	srv.kill()
	srv = startServer(t, dataDir, addr, "--allow-host", host, "--lease", "1s")
	if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", key, nil); code != 200 || m["duplicate"] != true {
		t.Fatalf("repeat after restart: %d %v", code, m)
	}
	if got := hits.Load(); got != 1 {
		t.Fatalf("side effect happened %d times, want 1", got)
	}

	// Kill the server while the executor is inside the side effect.
	_, m = srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{
		"action": "http.post", "target": sink.URL + "/hang", "idempotency_key": "gate2-cut",
	})
	cut := intentID(m)
	srv.approveVia(adminKeys[dataDir], "acme", cut)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/tenants/acme/intents/"+cut+"/execute", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for hits.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the hanging execution never reached the sink")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.kill()
	once.Do(func() { close(release) })
	srv = startServer(t, dataDir, addr, "--allow-host", host, "--lease", "1s")
	// The dead node's lease lapses (at most the lease it was started with)
	// and the execution reads in doubt.
	var code int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, m = srv.do("GET", "/v1/tenants/acme/intents/"+cut, key, nil)
		if code != 200 || m["state"] != "executing" || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 || m["state"] != "in_doubt" {
		t.Fatalf("cut execution state: %d %v", code, m)
	}
	code, m = srv.do("POST", "/v1/tenants/acme/intents/"+cut+"/execute", key, nil)
	if errObj, _ := m["error"].(map[string]any); code != 409 || errObj["code"] != "in_doubt" {
		t.Fatalf("execute in-doubt: %d %v", code, m)
	}
	if got := hits.Load(); got != 2 {
		t.Fatalf("sink hits = %d, want 2 (the in-doubt execution must not be re-run)", got)
	}
	// An operator finds it in the in-doubt list and resolves it, audited.
	admin := adminKeys[dataDir]
	code, m = srv.do("GET", "/v1/tenants/acme/intents?state=in_doubt", admin, nil)
	list, _ := m["intents"].([]any)
	if code != 200 || len(list) != 1 || list[0].(map[string]any)["intent_id"] != cut {
		t.Fatalf("in-doubt list: %d %v", code, m)
	}
	code, m = srv.do("POST", "/v1/tenants/acme/intents/"+cut+"/resolve", admin, map[string]string{"outcome": "failed", "reason": "the sink shows no order"})
	if code != 200 || m["status"] != "failed" {
		t.Fatalf("resolve: %d %v", code, m)
	}
	if code, m = srv.do("GET", "/v1/tenants/acme/intents/"+cut, key, nil); code != 200 || m["state"] != "failed" {
		t.Fatalf("after resolution: %d %v", code, m)
	}
	if code, m = srv.do("POST", "/v1/tenants/acme/intents/"+cut+"/execute", key, nil); code != 200 || m["duplicate"] != true || hits.Load() != 2 {
		t.Fatalf("execute after resolution: %d %v, hits %d", code, m, hits.Load())
	}
	if code, m = srv.do("GET", "/v1/tenants/acme/audit/verify", key, nil); code != 200 || m["pass"] != true {
		t.Fatalf("chain after resolution: %d %v", code, m)
	}
}

// TestCLIHelpAndErrors: usage goes to stderr with exit 2; bad flags name the flag.
func TestCLIHelpAndErrors(t *testing.T) {
	cmd := exec.Command(binary(t))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "Commands:") {
		t.Fatalf("no args: %v\n%s", err, out)
	}
	cmd = exec.Command(binary(t), "check-config", "--listen", "0.0.0.0:80")
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--listen") {
		t.Fatalf("check-config bad listen: %v\n%s", err, out)
	}
	cmd = exec.Command(binary(t), "check-config", "--retention", "10ms")
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--retention 10ms: must be 0") {
		t.Fatalf("check-config bad retention: %v\n%s", err, out)
	}
	cmd = exec.Command(binary(t), "check-config", "--retention", "1m") // the approval TTL is 15m
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "shorter than --approval-ttl 15m0s") {
		t.Fatalf("check-config retention under the approval TTL: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(run(t, "check-config", "--data-dir", t.TempDir())))
	if !sc.Scan() || sc.Text() != "configuration OK" {
		t.Fatal("check-config did not accept defaults")
	}
}

// TestGate3ReplayFromExport: export through the CLI, replay twice to
// byte-identical reports with pass=true; one flipped byte makes replay exit
// non-zero and name the record.
func TestGate3ReplayFromExport(t *testing.T) {
	dataDir := t.TempDir()
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, adminKeys[dataDir])
	for i := range 5 {
		_, m := srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{
			"action": "fs.write", "target": fmt.Sprintf("g3/%d.txt", i), "params": map[string]string{"content": "x"}, "idempotency_key": fmt.Sprint("g3-", i),
		})
		srv.approveVia(adminKeys[dataDir], "acme", intentID(m))
		srv.do("POST", "/v1/tenants/acme/intents/"+intentID(m)+"/execute", key, nil)
	}
	srv.kill()
	dir := t.TempDir()
	export := filepath.Join(dir, "acme.jsonl")
	run(t, "audit", "export", "--data-dir", dataDir, "--tenant", "acme", "--out", export)
	r1, r2 := filepath.Join(dir, "r1.json"), filepath.Join(dir, "r2.json")
	run(t, "replay", "--from-export", export, "--out", r1)
	run(t, "replay", "--from-export", export, "--out", r2)
	b1, _ := os.ReadFile(r1)
	b2, _ := os.ReadFile(r2)
	if !bytes.Equal(b1, b2) || !bytes.Contains(b1, []byte(`"pass":true`)) || !bytes.Contains(b1, []byte(`"records":36`)) {
		t.Fatalf("reports differ or fail:\n%s\n%s", b1, b2)
	}
	// Live replay of the same store gives the same report.
	if live := run(t, "replay", "--data-dir", dataDir, "--tenant", "acme"); live != string(b1) {
		t.Fatalf("live replay differs from export replay:\n%s\n%s", live, b1)
	}
	raw, _ := os.ReadFile(export)
	lines := bytes.Split(raw, []byte("\n"))
	rec := slices.IndexFunc(lines, func(l []byte) bool { return bytes.Contains(l, []byte(`"g3/1.txt"`)) })
	if rec < 0 {
		t.Fatal("no record holds the target")
	}
	i := bytes.Index(lines[rec], []byte(`"g3/1.txt"`))
	lines[rec][i+4] ^= 0x01 // flip one bit of one byte
	tampered := filepath.Join(dir, "tampered.jsonl")
	os.WriteFile(tampered, bytes.Join(lines, []byte("\n")), 0o644)
	cmd := exec.Command(binary(t), "replay", "--from-export", tampered, "--out", filepath.Join(dir, "r3.json"))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), fmt.Sprintf("seq=%d ", rec+1)) {
		t.Fatalf("tampered replay: %v\n%s", err, out)
	}
}

// startNATS runs `exoarmur nats` as its own process.
func startNATS(t *testing.T) string {
	t.Helper()
	addr := freePort(t)
	cmd := exec.Command(binary(t), "nats", "--data-dir", t.TempDir(), "--listen", addr)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "nats://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats not listening:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGate5KillSwitchAcrossNodes: two server processes on one standalone
// NATS process. Engaging the switch through node A blocks executions on
// node B as soon as the PUT has returned; disengaging lets them run. Over
// 200 flips, node B's first read after each PUT response already shows the
// new state (the PUT waits for every live node to acknowledge).
func TestGate5KillSwitchAcrossNodes(t *testing.T) {
	url := startNATS(t)
	agent, admin := createKeys(t, "--nats-url", url)
	sandbox := t.TempDir()
	addrA, addrB := freePort(t), freePort(t)
	startServer(t, "", addrA, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-a")
	b := startServer(t, "", addrB, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-b")
	goLive(t, addrA, admin)

	propose := func(key string) string {
		code, m := b.do("POST", "/v1/tenants/acme/intents", agent, map[string]any{"action": "fs.read", "target": "none.txt", "idempotency_key": key})
		if code != 201 {
			t.Fatalf("propose on B: %d %v", code, m)
		}
		return intentID(m)
	}
	for _, scope := range []struct {
		args   []string
		reason string
	}{
		{[]string{"--reason", "drill"}, "killswitch_global_engaged"},
		{[]string{"--tenant", "acme", "--reason", "drill"}, "killswitch_tenant_engaged"},
	} {
		id := propose("ks-" + scope.reason)
		killswitch(t, addrA, admin, append([]string{"engage"}, scope.args...)...)
		code, m := b.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", agent, nil)
		errObj, _ := m["error"].(map[string]any)
		if reasons, _ := errObj["reasons"].([]any); code != 403 || len(reasons) == 0 || reasons[0] != scope.reason {
			t.Fatalf("execute on B right after engaging on A: %d %v", code, m)
		}
		killswitch(t, addrA, admin, append([]string{"disengage"}, scope.args...)...)
		if code, m := b.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", agent, nil); code != 200 {
			// fs.read of a missing file runs and fails inside the sandbox: 200 with status failed.
			t.Fatalf("execute on B after disengaging: %d %v", code, m)
		}
	}

	// Propagation: flip through A, read B's local copy right after the response.
	const flips = 200
	var putLatency []time.Duration
	lagging := 0
	for i := range flips {
		engaged := i%2 == 0
		body, _ := json.Marshal(map[string]any{"engaged": engaged, "reason": fmt.Sprint("flip ", i)})
		req, _ := http.NewRequest("PUT", "http://"+addrA+"/v1/killswitch", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		putLatency = append(putLatency, time.Since(start))
		if resp.StatusCode != 200 {
			t.Fatalf("flip %d: HTTP %d", i, resp.StatusCode)
		}
		_, m := b.do("GET", "/v1/killswitch", admin, nil)
		if st, _ := m["state"].(map[string]any); st["engaged"] != engaged {
			lagging++
		}
	}
	if lagging != 0 {
		t.Fatalf("node B did not yet show the new state right after %d of %d PUT responses", lagging, flips)
	}
	slices.Sort(putLatency)
	t.Logf("kill switch PUT on node A until every live node applied it (%d flips): p50=%s p99=%s max=%s; node B lagging after the response: %d",
		flips, putLatency[flips/2], putLatency[flips*99/100], putLatency[flips-1], lagging)
}

// TestGate6TwoTenantsTwoNodes: tenants acme and beta work concurrently on
// two server processes sharing one NATS process, with real keys. Cross-tenant
// attempts get 404; each chain holds only its tenant, verifies, and replays
// (per tenant, from an export) to byte-identical passing reports.
func TestGate6TwoTenantsTwoNodes(t *testing.T) {
	url := startNATS(t)
	key := func(name, role, tn, actions string) string {
		return strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", name, "--role", role, "--tenant", tn, "--actions", actions))
	}
	acmeKey, betaKey := key("acme-bot", "agent", "acme", "*"), key("beta-bot", "agent", "beta", "*")
	admin := strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", "admin", "--role", "admin", "--tenant", "acme", "--tenant", "beta", "--tenant", "system", "--actions", "*"))
	sandbox := t.TempDir()
	addrA, addrB := freePort(t), freePort(t)
	a := startServer(t, "", addrA, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-a")
	b := startServer(t, "", addrB, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-b")
	killswitch(t, addrA, admin, "disengage", "--reason", "go")
	killswitch(t, addrA, admin, "disengage", "--tenant", "acme", "--reason", "go")
	killswitch(t, addrB, admin, "disengage", "--tenant", "beta", "--reason", "go")

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, 8*n)
	work := func(srv *server, key, tn, other string) {
		defer wg.Done()
		for i := range n {
			code, m := srv.do("POST", "/v1/tenants/"+tn+"/intents", key, map[string]any{
				"action": "fs.write", "target": fmt.Sprintf("w/%d.txt", i), "params": map[string]string{"content": tn}, "idempotency_key": fmt.Sprint(tn, "-", i),
			})
			if code != 201 {
				errs <- fmt.Sprintf("%s propose %d: %d %v", tn, i, code, m)
				continue
			}
			if code, m := srv.do("POST", "/v1/tenants/"+tn+"/intents/"+intentID(m)+"/approvals", admin, map[string]string{"decision": "approve", "reason": "e2e"}); code != 200 {
				errs <- fmt.Sprintf("%s approve %d: %d %v", tn, i, code, m)
			}
			if code, m := srv.do("POST", "/v1/tenants/"+tn+"/intents/"+intentID(m)+"/execute", key, nil); code != 200 {
				errs <- fmt.Sprintf("%s execute %d: %d %v", tn, i, code, m)
			}
			// And a cross-tenant attempt on the other node's tenant.
			if code, _ := srv.do("GET", "/v1/tenants/"+other+"/audit", key, nil); code != 404 {
				errs <- fmt.Sprintf("%s reading %s's audit: %d", tn, other, code)
			}
		}
	}
	wg.Add(2)
	go work(a, acmeKey, "acme", "beta")
	go work(b, betaKey, "beta", "acme")
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// The CLI path is refused the same way: acme's key cannot flip beta's switch.
	cmd := exec.Command(binary(t), "killswitch", "engage", "--tenant", "beta", "--reason", "cross", "--server", "http://"+addrA)
	cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+acmeKey)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "HTTP 404") {
		t.Fatalf("cross-tenant killswitch via CLI: %v\n%s", err, out)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		tn, key, other string
		srv            *server
	}{{"acme", acmeKey, "beta", b}, {"beta", betaKey, "acme", a}} {
		// Export through the node that did not serve the workload.
		req, _ := http.NewRequest("GET", "http://"+c.srv.addr+"/v1/tenants/"+c.tn+"/audit/export", nil)
		req.Header.Set("Authorization", "Bearer "+c.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		export, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(export, []byte(`"tenant":"`+c.other+`"`)) || bytes.Count(export, []byte(`"kind":"execution.succeeded"`)) != n {
			t.Fatalf("%s export is not %s's alone or misses executions", c.tn, c.tn)
		}
		file := filepath.Join(dir, c.tn+".jsonl")
		os.WriteFile(file, export, 0o644)
		r1 := run(t, "replay", "--from-export", file, "--tenant", c.tn)
		r2 := run(t, "replay", "--from-export", file, "--tenant", c.tn)
		if r1 != r2 || !strings.Contains(r1, `"pass":true`) {
			t.Fatalf("%s replay: %s / %s", c.tn, r1, r2)
		}
		files, _ := os.ReadDir(filepath.Join(sandbox, c.tn, "w"))
		if len(files) != n {
			t.Fatalf("%s sandbox holds %d files, want %d", c.tn, len(files), n)
		}
		for _, fe := range files {
			if b, _ := os.ReadFile(filepath.Join(sandbox, c.tn, "w", fe.Name())); string(b) != c.tn {
				t.Fatalf("%s/%s holds %q", c.tn, fe.Name(), b)
			}
		}
	}
}

// TestApprovalAcrossRestartAndWorker: an approval given through the CLI
// survives kill -9; after restart the execute runs exactly once (counted at
// an HTTP sink). An intent submitted with execute_when_approved is run by
// the background worker once approved. The proposer cannot approve.
func TestApprovalAcrossRestartAndWorker(t *testing.T) {
	var hits atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer sink.Close()
	host := strings.TrimPrefix(sink.URL, "http://")
	dataDir := t.TempDir()
	key := createKey(t, dataDir)
	admin := adminKeys[dataDir]
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--allow-host", host)
	goLive(t, addr, admin)
	cli := func(k string, args ...string) (string, error) {
		cmd := exec.Command(binary(t), append(args, "--server", "http://"+addr)...)
		cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+k)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	_, m := srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{"action": "http.post", "target": sink.URL + "/x", "idempotency_key": "appr-restart"})
	id := intentID(m)
	if out, err := cli(key, "approve", id, "--tenant", "acme", "--reason", "mine"); err == nil || !strings.Contains(out, "HTTP 403") {
		t.Fatalf("the proposer's key approved (or failed oddly): %v %s", err, out)
	}
	if out, err := cli(admin, "approvals", "list", "--tenant", "acme"); err != nil || !strings.Contains(out, id) {
		t.Fatalf("approvals list: %v %s", err, out)
	}
	if out, err := cli(admin, "approve", id, "--tenant", "acme", "--reason", "reviewed"); err != nil || !strings.Contains(out, `"status":"approved"`) {
		t.Fatalf("approve: %v %s", err, out)
	}
	srv.kill()
	srv = startServer(t, dataDir, addr, "--allow-host", host)
	for i := range 2 {
		code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", key, nil)
		if code != 200 || m["duplicate"] != (i == 1) {
			t.Fatalf("execute %d after restart: %d %v", i, code, m)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("sink hits = %d, want 1", hits.Load())
	}

	// The background worker.
	_, m = srv.do("POST", "/v1/tenants/acme/intents", key, map[string]any{"action": "http.post", "target": sink.URL + "/auto",
		"idempotency_key": "appr-worker", "execute_when_approved": true})
	auto := intentID(m)
	if out, err := cli(admin, "approve", auto, "--tenant", "acme", "--reason", "go ahead"); err != nil {
		t.Fatalf("approve: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, m := srv.do("GET", "/v1/tenants/acme/intents/"+auto, key, nil)
		if m["state"] == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not execute the approved intent: %v\n%s", m, srv.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hits.Load() != 2 {
		t.Fatalf("sink hits = %d, want 2", hits.Load())
	}
}

// TestBrokerLoss: with the NATS process killed, proposals and executions
// are refused with 503 store_unavailable and /readyz reports not ready; when
// NATS comes back on the same data dir the server recovers without a
// restart and everything acknowledged before is there.
func TestBrokerLoss(t *testing.T) {
	natsDir := t.TempDir()
	natsAddr := freePort(t)
	startNATSAt := func() *exec.Cmd {
		cmd := exec.Command(binary(t), "nats", "--data-dir", natsDir, "--listen", natsAddr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
		deadline := time.Now().Add(20 * time.Second)
		for {
			if c, err := net.Dial("tcp", natsAddr); err == nil {
				c.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatal("nats not listening")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	natsCmd := startNATSAt()
	url := "nats://" + natsAddr
	agent, admin := createKeys(t, "--nats-url", url)
	addr := freePort(t)
	srv := startServer(t, "", addr, "--nats-url", url, "--sandbox-dir", t.TempDir())
	goLive(t, addr, admin)
	propose := func(key string) (int, map[string]any) {
		return srv.do("POST", "/v1/tenants/acme/intents", agent, map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": key})
	}
	code, m := propose("before")
	if code != 201 {
		t.Fatalf("propose before: %d %v", code, m)
	}
	before := intentID(m)

	_ = natsCmd.Process.Signal(syscall.SIGKILL)
	_ = natsCmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 503 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready after NATS died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, m = propose("during")
	if e, _ := m["error"].(map[string]any); code != 503 || e["code"] != "store_unavailable" {
		t.Fatalf("propose during the outage: %d %v", code, m)
	}
	code, m = srv.do("POST", "/v1/tenants/acme/intents/"+before+"/execute", agent, nil)
	if code != 503 {
		t.Fatalf("execute during the outage: %d %v", code, m)
	}

	startNATSAt()
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, m = srv.do("POST", "/v1/tenants/acme/intents/"+before+"/execute", agent, nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not recover: %d %v\n%s", code, m, srv.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, m := srv.do("GET", "/v1/tenants/acme/audit/verify", agent, nil); code != 200 || m["pass"] != true {
		t.Fatalf("chain after recovery: %d %v", code, m)
	}
	if code, _ := propose("during"); code != 201 {
		t.Fatalf("the refused proposal can be made again after recovery: %d", code)
	}
}
