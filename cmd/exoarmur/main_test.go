package main_test

// End-to-end tests against real processes of the built binary: Gate 1
// (durable audit across kill -9) and Gate 2 (idempotency across restart).

import (
	"bufio"
	"bytes"
	"errors"
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

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
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
	c := newClient(t, addr, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.Ready(t.Context()) == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noLimits turns serve's rate limits and quotas off, for the load tests
// (crashes, failovers, reads after writes at R3) whose clients go as fast
// as they are answered: they test durability, not the limits (which
// internal/access, internal/gate and internal/api test).
var noLimits = []string{"--rate-propose", "0", "--rate-propose-tenant", "0", "--rate-execute", "0", "--rate-execute-tenant", "0",
	"--rate-approve", "0", "--rate-approve-tenant", "0", "--quota-pending-intents", "0", "--quota-pending-approvals", "0", "--quota-stored-bytes", "0"}

// startServerNoWait starts `exoarmur serve` and returns at once.
func startServerNoWait(t *testing.T, dataDir, addr string, extra ...string) *server {
	t.Helper()
	return startServerEnv(t, nil, dataDir, addr, extra...)
}

// startServerEnv is startServerNoWait with env (NAME=VALUE) added to the
// server process's environment only.
func startServerEnv(t *testing.T, env []string, dataDir, addr string, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--listen", addr}, extra...)
	if dataDir != "" {
		args = append(args, "--data-dir", dataDir)
	} else if !slices.Contains(extra, "--audit-key") {
		// Not the default ./data of the test's working directory.
		args = append(args, "--audit-key", filepath.Join(t.TempDir(), "audit-key.json"))
	}
	cmd := exec.Command(binary(t), args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
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

// client returns a typed API client of the server, authenticated with key.
func (s *server) client(key string) *client.Client {
	s.t.Helper()
	return newClient(s.t, s.addr, key)
}

// newClient returns a typed API client of the server at addr, authenticated
// with key ("" sends none), whose transport is exactStatus.
func newClient(t testing.TB, addr, key string) *client.Client {
	t.Helper()
	c, err := client.New("http://"+addr, client.WithAPIKey(key), client.WithHTTPClient(&http.Client{Transport: exactStatus{}}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exactStatus is the transport of the tests' clients. The client takes any
// 2xx for success, while these tests check the exact status, so a 2xx that
// is not the one the API answers the request with becomes an error: 201 or
// 200 (an idempotency key already used) for a proposal, 201 for a new key,
// 200 or 202 (the serving node did not confirm in time) for a kill switch
// change, 200 for every other request. Propose's created and
// SetKillSwitch's confirmed tell the two allowed answers apart.
type exactStatus struct {
	next http.RoundTripper // nil: http.DefaultTransport (mtls_test.go passes its TLS transport)
}

func (x exactStatus) RoundTrip(r *http.Request) (*http.Response, error) {
	next := x.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	if err != nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, err
	}
	want := []int{http.StatusOK}
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/intents"):
		want = []int{http.StatusCreated, http.StatusOK}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/keys":
		want = []int{http.StatusCreated}
	case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/killswitch"):
		want = []int{http.StatusOK, http.StatusAccepted}
	}
	if !slices.Contains(want, resp.StatusCode) {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s answered HTTP %d, want one of %v", r.Method, r.URL.Path, resp.StatusCode, want)
	}
	return resp, nil
}

// refusal is err as the API's refusal. Any other error, or none, is a zero
// Error, whose Status 0 matches no check.
func refusal(err error) *client.Error {
	var e *client.Error
	if errors.As(err, &e) {
		return e
	}
	return &client.Error{}
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
	if _, err := s.client(key).DecideApproval(s.t.Context(), tn, id, contract.ApprovalDecision{Decision: "approve", Reason: "e2e"}); err != nil {
		s.t.Fatalf("approve %s: %v", id, err)
	}
}

// TestGate1DurableAuditAcrossKill: N acknowledged proposals and executions
// survive SIGKILL of the server; the chain verifies after restart.
func TestGate1DurableAuditAcrossKill(t *testing.T) {
	dataDir := t.TempDir()
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, adminKeys[dataDir])
	ctx, agent := t.Context(), srv.client(key)
	const n = 25
	var ids []string
	for i := range n {
		v, created, err := agent.Propose(ctx, "acme", contract.IntentRequest{
			Action: "fs.write", Target: fmt.Sprintf("gate1/f%02d.txt", i), Params: map[string]string{"content": fmt.Sprint("v", i)},
			IdempotencyKey: fmt.Sprintf("gate1-%02d", i),
		})
		if err != nil || !created {
			t.Fatalf("propose %d: created %v, %v", i, created, err)
		}
		id := v.Intent.ID
		srv.approveVia(adminKeys[dataDir], "acme", id)
		if _, err := agent.Execute(ctx, "acme", id); err != nil {
			t.Fatalf("execute %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	srv.kill()

	srv = startServer(t, dataDir, addr)
	agent = srv.client(key)
	for _, id := range ids {
		v, err := agent.GetIntent(ctx, "acme", id)
		if err != nil || v.State != "succeeded" {
			t.Fatalf("after kill -9, intent %s: %v %+v", id, err, v)
		}
	}
	rep, err := srv.client(adminKeys[dataDir]).AuditVerify(ctx, "acme") // the tenant's whole audit: not an agent's
	// per intent: proposed, approval requested, granted, allowed, approval executed, started, succeeded; + the switch change
	if err != nil || !rep.Pass || rep.Records != 7*n+1 {
		t.Fatalf("verify after restart: %v %+v", err, rep)
	}
	srv.kill()
	// The offline CLI agrees.
	out := run(t, "audit", "verify", "--data-dir", dataDir, "--tenant", "acme", "--json")
	if !strings.Contains(out, `"pass":true`) {
		t.Fatalf("audit verify --json: %s", out)
	}
	if out := run(t, "audit", "verify", "--data-dir", dataDir, "--tenant", "acme"); !strings.HasPrefix(out, fmt.Sprintf("audit chain of acme verifies: %d records, ", 7*n+1)) {
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
	ctx, agent := t.Context(), srv.client(key)

	v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{
		Action: "http.post", Target: sink.URL + "/effect", Params: map[string]string{"body": `{"n":1}`}, IdempotencyKey: "gate2-once",
	})
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	id := v.Intent.ID
	srv.approveVia(adminKeys[dataDir], "acme", id)
	if _, err := agent.Execute(ctx, "acme", id); err != nil {
		t.Fatalf("execute: %v", err)
	}
	if out, err := agent.Execute(ctx, "acme", id); err != nil || !out.Duplicate {
		t.Fatalf("repeat: %v %+v", err, out)
	}
	srv.kill()
	srv = startServer(t, dataDir, addr, "--allow-host", host, "--lease", "1s")
	agent = srv.client(key)
	if out, err := agent.Execute(ctx, "acme", id); err != nil || !out.Duplicate {
		t.Fatalf("repeat after restart: %v %+v", err, out)
	}
	if got := hits.Load(); got != 1 {
		t.Fatalf("side effect happened %d times, want 1", got)
	}

	// Kill the server while the executor is inside the side effect.
	v, _, err = agent.Propose(ctx, "acme", contract.IntentRequest{
		Action: "http.post", Target: sink.URL + "/hang", IdempotencyKey: "gate2-cut",
	})
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	cut := v.Intent.ID
	srv.approveVia(adminKeys[dataDir], "acme", cut)
	go func(c *client.Client) { _, _ = c.Execute(ctx, "acme", cut) }(agent) // cut by the kill below
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
	agent = srv.client(key)
	// The dead node's lease lapses (at most the lease it was started with)
	// and the execution reads in doubt.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v, err = agent.GetIntent(ctx, "acme", cut)
		if err != nil || v.State != "executing" || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || v.State != "in_doubt" {
		t.Fatalf("cut execution state: %v %+v", err, v)
	}
	_, err = agent.Execute(ctx, "acme", cut)
	if e := refusal(err); e.Status != 409 || e.Code != "in_doubt" {
		t.Fatalf("execute in-doubt: %v", err)
	}
	if got := hits.Load(); got != 2 {
		t.Fatalf("sink hits = %d, want 2 (the in-doubt execution must not be re-run)", got)
	}
	// An operator finds it in the in-doubt list and resolves it, audited.
	admin := srv.client(adminKeys[dataDir])
	list, err := admin.ListInDoubt(ctx, "acme")
	if err != nil || len(list) != 1 || list[0].IntentID != cut {
		t.Fatalf("in-doubt list: %v %+v", err, list)
	}
	res, err := admin.Resolve(ctx, "acme", cut, client.ResolveRequest{Outcome: "failed", Reason: "the sink shows no order"})
	if err != nil || res.Status != "failed" {
		t.Fatalf("resolve: %v %+v", err, res)
	}
	if v, err = agent.GetIntent(ctx, "acme", cut); err != nil || v.State != "failed" {
		t.Fatalf("after resolution: %v %+v", err, v)
	}
	if out, err := agent.Execute(ctx, "acme", cut); err != nil || !out.Duplicate || hits.Load() != 2 {
		t.Fatalf("execute after resolution: %v %+v, hits %d", err, out, hits.Load())
	}
	if rep, err := srv.client(adminKeys[dataDir]).AuditVerify(ctx, "acme"); err != nil || !rep.Pass {
		t.Fatalf("chain after resolution: %v %+v", err, rep)
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
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-replicas", "2", "--nats-url", "nats://127.0.0.1:1"}, "--nats-replicas 2: must be 1, 3 or 5"},
		{[]string{"--nats-replicas", "3"}, "--nats-replicas 3: needs --nats-url of a JetStream cluster"},
	} {
		out, err := exec.Command(binary(t), append([]string{"check-config"}, c.args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Fatalf("check-config %v: %v\n%s", c.args, err, out)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(run(t, "check-config", "--data-dir", t.TempDir())))
	if !sc.Scan() || sc.Text() != "configuration OK" {
		t.Fatal("check-config did not accept defaults")
	}
	// check-config reaches what it names and creates nothing.
	missing := filepath.Join(t.TempDir(), "data")
	if out := run(t, "check-config", "--data-dir", missing); !strings.Contains(out, "\n  data dir "+missing+": does not exist; serve will create it (in ") {
		t.Fatalf("check-config of a missing data dir:\n%s", out)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check-config created %s: %v", missing, err)
	}
	cmd = exec.Command(binary(t), "check-config", "--nats-url", "nats://"+freePort(t), "--sandbox-dir", t.TempDir())
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "--nats-url: not reachable within 3s") {
		t.Fatalf("check-config of an unreachable NATS: %v\n%s", err, out)
	}
	// Help is asked for: stdout, exit 0, the usage line, the flags, an example.
	for _, args := range [][]string{{"approve", "-h"}, {"deny", "--help"}, {"keys", "revoke", "-h"}, {"audit", "verify", "--help"}, {"killswitch", "status", "-h"}} {
		out := run(t, args...)
		name := strings.Join(args[:len(args)-1], " ")
		if !strings.HasPrefix(out, "Usage: exoarmur "+name) || !strings.Contains(out, "\nFlags:\n  -") || !strings.Contains(out, "\nExample:\n  exoarmur "+name) {
			t.Fatalf("exoarmur %s:\n%s", strings.Join(args, " "), out)
		}
	}
	for _, args := range [][]string{{"keys", "-h"}, {"approvals", "--help"}, {"killswitch", "-h"}, {"audit", "-h"}} {
		if out := run(t, args...); !strings.Contains(out, "\nSubcommands:\n") {
			t.Fatalf("exoarmur %s:\n%s", strings.Join(args, " "), out)
		}
	}
	cmd = exec.Command(binary(t), "killswitch", "flip")
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "valid: engage, disengage, status") {
		t.Fatalf("killswitch flip: %v\n%s", err, out)
	}
}

// TestVersionMatchesTheBuildStamp: the built binary's version reports what
// the toolchain stamped into it (go version -m): the commit, when the
// build ran in a git checkout with VCS stamping, else "unknown" (this
// repository's tests may run in a git worktree or with -buildvcs=false).
func TestVersionMatchesTheBuildStamp(t *testing.T) {
	bin := binary(t)
	m, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	commit := "unknown (not stamped"
	for _, l := range strings.Split(string(m), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "build\tvcs.revision="); ok {
			commit = v
		}
	}
	out := run(t, "version")
	if !strings.HasPrefix(out, "exoarmur  ") || !strings.Contains(out, "\nmodule    github.com/exoarmur/exoarmur\n") || !strings.Contains(out, "\ncommit    "+commit) {
		t.Fatalf("version, with go version -m reporting:\n%s\n%s", m, out)
	}
	t.Logf("%s", out)
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
	ctx, agent := t.Context(), srv.client(key)
	for i := range 5 {
		v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{
			Action: "fs.write", Target: fmt.Sprintf("g3/%d.txt", i), Params: map[string]string{"content": "x"}, IdempotencyKey: fmt.Sprint("g3-", i),
		})
		if err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		srv.approveVia(adminKeys[dataDir], "acme", v.Intent.ID)
		if _, err := agent.Execute(ctx, "acme", v.Intent.ID); err != nil {
			t.Fatalf("execute %d: %v", i, err)
		}
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
	ctx, agentB, adminA, adminB := t.Context(), b.client(agent), newClient(t, addrA, admin), b.client(admin)

	propose := func(key string) string {
		t.Helper()
		v, created, err := agentB.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "none.txt", IdempotencyKey: key})
		if err != nil || !created {
			t.Fatalf("propose on B: created %v, %v", created, err)
		}
		return v.Intent.ID
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
		_, err := agentB.Execute(ctx, "acme", id)
		if e := refusal(err); e.Status != 403 || e.Code != "blocked" || len(e.Reasons) == 0 || e.Reasons[0] != scope.reason {
			t.Fatalf("execute on B right after engaging on A: %v", err)
		}
		killswitch(t, addrA, admin, append([]string{"disengage"}, scope.args...)...)
		if out, err := agentB.Execute(ctx, "acme", id); err != nil {
			// fs.read of a missing file runs and fails inside the sandbox: 200 with status failed.
			t.Fatalf("execute on B after disengaging: %v %+v", err, out)
		}
	}

	// Propagation: flip through A, read B's local copy right after the response.
	const flips = 200
	var putLatency []time.Duration
	lagging := 0
	for i := range flips {
		engaged := i%2 == 0
		start := time.Now()
		_, confirmed, err := adminA.SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: engaged, Reason: fmt.Sprint("flip ", i)})
		putLatency = append(putLatency, time.Since(start))
		if err != nil || !confirmed {
			// confirmed is HTTP 200; 202 is a change node A did not confirm applying.
			t.Fatalf("flip %d: confirmed %v, %v", i, confirmed, err)
		}
		if st, err := adminB.GetKillSwitch(ctx, ""); err != nil || st.Engaged != engaged {
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
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan string, 8*n)
	work := func(agent, approver *client.Client, tn, other string) {
		defer wg.Done()
		for i := range n {
			v, created, err := agent.Propose(ctx, tn, contract.IntentRequest{
				Action: "fs.write", Target: fmt.Sprintf("w/%d.txt", i), Params: map[string]string{"content": tn}, IdempotencyKey: fmt.Sprint(tn, "-", i),
			})
			if err != nil || !created {
				errs <- fmt.Sprintf("%s propose %d: created %v, %v", tn, i, created, err)
				continue
			}
			if _, err := approver.DecideApproval(ctx, tn, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "e2e"}); err != nil {
				errs <- fmt.Sprintf("%s approve %d: %v", tn, i, err)
			}
			if _, err := agent.Execute(ctx, tn, v.Intent.ID); err != nil {
				errs <- fmt.Sprintf("%s execute %d: %v", tn, i, err)
			}
			// And a cross-tenant attempt on the other node's tenant.
			if _, err := agent.AuditPage(ctx, other, 0, 0); refusal(err).Status != 404 || refusal(err).Code != "not_found" {
				errs <- fmt.Sprintf("%s reading %s's audit: %v, want 404 not_found", tn, other, err)
			}
		}
	}
	wg.Add(2)
	go work(a.client(acmeKey), a.client(admin), "acme", "beta")
	go work(b.client(betaKey), b.client(admin), "beta", "acme")
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
		var buf bytes.Buffer
		if _, err := c.srv.client(admin).AuditExport(ctx, c.tn, &buf); err != nil { // the tenant's whole audit: not an agent's
			t.Fatalf("%s export: %v", c.tn, err)
		}
		export := buf.Bytes()
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

	ctx := t.Context()
	v, _, err := srv.client(key).Propose(ctx, "acme", contract.IntentRequest{Action: "http.post", Target: sink.URL + "/x", IdempotencyKey: "appr-restart"})
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	id := v.Intent.ID
	if out, err := cli(key, "approve", id, "--tenant", "acme", "--reason", "mine"); err == nil || !strings.Contains(out, "HTTP 403") {
		t.Fatalf("the proposer's key approved (or failed oddly): %v %s", err, out)
	}
	if out, err := cli(admin, "approvals", "list", "--tenant", "acme"); err != nil || !strings.Contains(out, id) {
		t.Fatalf("approvals list: %v %s", err, out)
	}
	if out, err := cli(admin, "approve", id, "--tenant", "acme", "--reason", "reviewed", "--json"); err != nil || !strings.Contains(out, `"status":"approved"`) {
		t.Fatalf("approve: %v %s", err, out)
	}
	srv.kill()
	srv = startServer(t, dataDir, addr, "--allow-host", host)
	agent := srv.client(key)
	for i := range 2 {
		out, err := agent.Execute(ctx, "acme", id)
		if err != nil || out.Duplicate != (i == 1) {
			t.Fatalf("execute %d after restart: %v %+v", i, err, out)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("sink hits = %d, want 1", hits.Load())
	}

	// The background worker.
	v, _, err = agent.Propose(ctx, "acme", contract.IntentRequest{Action: "http.post", Target: sink.URL + "/auto",
		IdempotencyKey: "appr-worker", ExecuteWhenApproved: true})
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	auto := v.Intent.ID
	if out, err := cli(admin, "approve", auto, "--tenant", "acme", "--reason", "go ahead"); err != nil {
		t.Fatalf("approve: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := agent.GetIntent(ctx, "acme", auto)
		if err == nil && v.State == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not execute the approved intent: %v %+v\n%s", err, v, srv.logs.String())
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
	ctx, bot := t.Context(), srv.client(agent)
	propose := func(key string) (gate.View, bool, error) {
		return bot.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: key})
	}
	v, created, err := propose("before")
	if err != nil || !created {
		t.Fatalf("propose before: created %v, %v", created, err)
	}
	before := v.Intent.ID

	_ = natsCmd.Process.Signal(syscall.SIGKILL)
	_ = natsCmd.Wait()
	ready := srv.client("")
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = ready.Ready(ctx)
		if refusal(err).Status == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still ready after NATS died: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err = propose("during"); refusal(err).Status != 503 || refusal(err).Code != "store_unavailable" {
		t.Fatalf("propose during the outage: %v", err)
	}
	if _, err = bot.Execute(ctx, "acme", before); refusal(err).Status != 503 || refusal(err).Code != "store_unavailable" {
		t.Fatalf("execute during the outage: %v", err)
	}

	startNATSAt()
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, err = bot.Execute(ctx, "acme", before); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not recover: %v\n%s", err, srv.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rep, err := srv.client(admin).AuditVerify(ctx, "acme"); err != nil || !rep.Pass {
		t.Fatalf("chain after recovery: %v %+v", err, rep)
	}
	if _, created, err := propose("during"); err != nil || !created {
		t.Fatalf("the refused proposal can be made again after recovery: created %v, %v", created, err)
	}
}
