package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func runLab(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = Main(context.Background(), args, Env{Stdout: &o, Stderr: &e})
	return o.String(), e.String(), code
}

func seededKey(t *testing.T, dir, seed string) string {
	t.Helper()
	args := []string{"keys", "create", "--data-dir", dir, "--name", "bot", "--role", "agent", "--tenant", "acme", "--actions", "*"}
	if seed != "" {
		args = append(args, "--evidence-seed", seed)
	}
	out, errOut, code := runLab(t, args...)
	if code != 0 {
		t.Fatalf("keys create: exit %d: %s", code, errOut)
	}
	if seed != "" && !strings.Contains(errOut, "EVIDENCE SEED") {
		t.Fatalf("a seeded key without the warning: %s", errOut)
	}
	return strings.TrimSpace(out)
}

// TestEvidenceSeedKeys: the same seed gives the same key in two stores
// (the evidence run's keys are reproducible); without a seed, keys differ.
func TestEvidenceSeedKeys(t *testing.T) {
	a, b := seededKey(t, t.TempDir(), "s1"), seededKey(t, t.TempDir(), "s1")
	if a == "" || a != b {
		t.Fatalf("seeded keys differ: %q %q", a, b)
	}
	if c := seededKey(t, t.TempDir(), ""); c == a || c == "" {
		t.Fatalf("an unseeded key %q equals the seeded one", c)
	}
}

// labServe is a running exoarmur-lab serve with the evidence clock.
type labServe struct {
	t       testing.TB
	base    string
	key     string
	logs    bytes.Buffer
	cancel  context.CancelFunc
	done    chan int
	stopped bool
}

// startLab runs exoarmur-lab serve on dir with the evidence clock and
// waits until it is ready; key authenticates do.
func startLab(t testing.TB, dir, key string) *labServe {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s := &labServe{t: t, base: "http://" + addr, key: key, cancel: cancel, done: make(chan int, 1)}
	go func() {
		s.done <- Main(ctx, []string{"serve", "--data-dir", dir, "--listen", addr, "--node", "lab", "--evidence-clock", "2026-01-01T00:00:00Z"},
			Env{Stdout: &bytes.Buffer{}, Stderr: &s.logs})
	}()
	t.Cleanup(s.stop)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready")
		}
	}
	return s
}

// stop ends serve and waits for it (the log is complete afterwards).
func (s *labServe) stop() {
	if !s.stopped {
		s.stopped = true
		s.cancel()
		if code := <-s.done; code != 0 {
			s.t.Errorf("serve exited %d", code)
		}
	}
}

func (s *labServe) do(method, path string, body any) (int, string, map[string]any) {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), m
}

// createdAt proposes an fs.read and returns its intent's creation time.
func (s *labServe) createdAt(idem string) time.Time {
	s.t.Helper()
	code, _, m := s.do("POST", "/v1/tenants/acme/intents", map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": idem})
	intent, _ := m["intent"].(map[string]any)
	created, _ := intent["created_at"].(string)
	at, err := time.Parse(time.RFC3339Nano, created)
	if code != 201 || err != nil {
		s.t.Fatalf("propose %s: %d %v (%v)", idem, code, m, err)
	}
	return at
}

// TestEvidenceClockResumesAfterRestart: a restarted lab node's clock goes
// on after the last recorded time instead of starting over, so time never
// runs backwards in a chain (and a claim cut by a kill reads in doubt once
// its lease lapses, as on a wall clock).
func TestEvidenceClockResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	key := seededKey(t, dir, "lab-restart")
	s := startLab(t, dir, key)
	first := s.createdAt("before")
	s.stop()
	s = startLab(t, dir, key)
	second := s.createdAt("after")
	if !second.After(first) {
		t.Fatalf("after the restart the clock reads %s, not after %s", second, first)
	}
}

// TestLabServeKillSwitch: exoarmur-lab serve is the production serve with
// the evidence clock: on a fresh store the kill switches block every
// execution, the clock starts at --evidence-clock and request IDs are the
// node's sequence.
func TestLabServeKillSwitch(t *testing.T) {
	dir := t.TempDir()
	key := seededKey(t, dir, "lab-test")
	s := startLab(t, dir, key)
	do := s.do
	code, rid, m := do("POST", "/v1/tenants/acme/intents", map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": "k1"})
	if code != 201 || !strings.HasPrefix(rid, "lab-") {
		t.Fatalf("propose: %d request ID %q %v", code, rid, m)
	}
	intent, _ := m["intent"].(map[string]any)
	if created, _ := intent["created_at"].(string); !strings.HasPrefix(created, "2026-01-01T00:00:00.") {
		t.Fatalf("created_at %q is not on the evidence clock: %v", created, m)
	}
	id, _ := intent["id"].(string)
	code, _, m = do("POST", "/v1/tenants/acme/intents/"+id+"/execute", nil)
	errObj, _ := m["error"].(map[string]any)
	if reasons, _ := errObj["reasons"].([]any); code != 403 || len(reasons) == 0 || !strings.HasPrefix(reasons[0].(string), "killswitch_") {
		t.Fatalf("execute on a fresh store: %d %v", code, m)
	}
	s.stop() // the log is read once serve has returned
	if !strings.Contains(s.logs.String(), "EVIDENCE CLOCK") {
		t.Fatalf("no evidence clock warning in the log:\n%s", s.logs.String())
	}
}

// TestBadEvidenceClock: a malformed --evidence-clock is a usage error.
func TestBadEvidenceClock(t *testing.T) {
	if _, errOut, code := runLab(t, "serve", "--data-dir", t.TempDir(), "--evidence-clock", "yesterday"); code != 2 || !strings.Contains(errOut, "--evidence-clock") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestLabHelp: every lab command answers -h with exit 0 and its flags or
// subcommands; an unknown reality subcommand lists the valid ones.
func TestLabHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "reality"},
		{[]string{"reality", "-h"}, "verify"},
		{[]string{"reality", "run", "-h"}, "-local"},
		{[]string{"reality", "verify", "-h"}, "Usage"},
		{[]string{"bench", "-h"}, "-clients"},
		{[]string{"serve", "-h"}, "-evidence-clock"},
		{[]string{"keys", "create", "-h"}, "-evidence-seed"},
		{[]string{"keys", "-h"}, "keys create"},
	} {
		out, errOut, code := runLab(t, c.args...)
		if code != 0 || !strings.Contains(out+errOut, c.want) {
			t.Errorf("exoarmur-lab %v: exit %d, want 0 and %q in:\n%s%s", c.args, code, c.want, out, errOut)
		}
	}
	if _, errOut, code := runLab(t, "reality", "nope"); code != 2 || !strings.Contains(errOut, "valid: run, verify, client, sink") {
		t.Errorf("reality nope: exit %d %s", code, errOut)
	}
}
