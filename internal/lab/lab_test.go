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

// TestLabServeKillSwitch: exoarmur-lab serve is the production serve with
// the evidence clock: on a fresh store the kill switches block every
// execution, the clock starts at --evidence-clock and request IDs are the
// node's sequence.
func TestLabServeKillSwitch(t *testing.T) {
	dir := t.TempDir()
	key := seededKey(t, dir, "lab-test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() {
		done <- Main(ctx, []string{"serve", "--data-dir", dir, "--listen", addr, "--node", "lab", "--evidence-clock", "2026-01-01T00:00:00Z"},
			Env{Stdout: &bytes.Buffer{}, Stderr: &logs})
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("serve exited %d", code)
			}
		}
	}
	defer stop()
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready")
		}
	}
	do := func(method, path string, body any) (int, string, map[string]any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, resp.Header.Get("X-Request-Id"), m
	}
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
	stop() // the log is read once serve has returned
	if !strings.Contains(logs.String(), "EVIDENCE CLOCK") {
		t.Fatalf("no evidence clock warning in the log:\n%s", logs.String())
	}
}

// TestBadEvidenceClock: a malformed --evidence-clock is a usage error.
func TestBadEvidenceClock(t *testing.T) {
	if _, errOut, code := runLab(t, "serve", "--data-dir", t.TempDir(), "--evidence-clock", "yesterday"); code != 2 || !strings.Contains(errOut, "--evidence-clock") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
