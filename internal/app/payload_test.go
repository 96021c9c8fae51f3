package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/natsstore/natsstoretest"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// node is a wired ExoArmur node (openRuntime, as serve wires it) on an
// external NATS server whose max_payload is a test's, served over a
// loopback httptest server.
type node struct {
	rt      *runtime
	agent   *client.Client
	auditor *client.Client // reads the tenant's whole audit
	sandbox string         // tenant acme's sandbox dir
	nats    string         // the server's client URL
}

// startNode starts a NATS server that accepts messages of at most
// maxPayload bytes and a node on it with every kill switch of acme
// disengaged and an agent of acme that may run every action; the http
// executors may reach allow.
func startNode(tb testing.TB, maxPayload int32, allow ...string) *node {
	tb.Helper()
	ctx := context.Background()
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: tb.TempDir(), Host: "127.0.0.1", MaxPayload: maxPayload})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	dir := tb.TempDir()
	rt, err := openRuntime(ctx, ServeConfig{Store: StoreConfig{NATSURL: srv.ClientURL(), Sync: "default"}, SandboxDir: filepath.Join(dir, "sandbox"), Node: "payload", AllowHosts: allow,
		Checkpoints: CheckpointConfig{KeyFile: filepath.Join(dir, "audit-key.json")}}, prodDeps(nil))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rt.Close)
	for _, scope := range []tenant.ID{tenant.System, tenant.MustParse("acme")} {
		if _, err := rt.switches.Set(ctx, scope, killswitch.Flip{Engaged: false, Reason: "test setup", Actor: "test"}); err != nil {
			tb.Fatal(err)
		}
	}
	key, _, err := rt.keys.Create(ctx, auth.CreateRequest{Name: "agent", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}, CreatedBy: "cli"})
	if err != nil {
		tb.Fatal(err)
	}
	h := api.New(api.Config{Gate: rt.gate, Switches: rt.switches, Approvals: rt.approvals, Access: rt.access, Audit: rt.audit, Bundles: rt.bundles, Ready: rt.store.Ready})
	hs := httptest.NewServer(h)
	tb.Cleanup(hs.Close)
	c, err := client.New(hs.URL, client.WithAPIKey(key))
	if err != nil {
		tb.Fatal(err)
	}
	akey, _, err := rt.keys.Create(ctx, auth.CreateRequest{Name: "auditor", Role: auth.RoleAuditor, Tenants: []string{"acme"}, Actions: []string{"A0"}, CreatedBy: "cli"})
	if err != nil {
		tb.Fatal(err)
	}
	ac, err := client.New(hs.URL, client.WithAPIKey(akey))
	if err != nil {
		tb.Fatal(err)
	}
	sb := filepath.Join(dir, "sandbox", "acme")
	if err := os.MkdirAll(sb, 0o750); err != nil {
		tb.Fatal(err)
	}
	return &node{rt: rt, agent: c, auditor: ac, sandbox: sb, nats: srv.ClientURL()}
}

// run proposes and executes one action.
func (n *node) run(tb testing.TB, req contract.IntentRequest) (contract.ExecutionResult, error) {
	tb.Helper()
	ctx := context.Background()
	v, _, err := n.agent.Propose(ctx, "acme", req)
	if err != nil {
		tb.Fatalf("propose %s %s: %v", req.Action, req.Target, err)
	}
	out, err := n.agent.Execute(ctx, "acme", v.Intent.ID)
	return out.Result, err
}

// requireAllFits fails unless acme's chain verifies, nothing is in doubt,
// and every audit record and bucket value of acme is within the server's
// max_payload.
func (n *node) requireAllFits(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	limit := n.rt.store.MaxPayload()
	acme := tenant.MustParse("acme")
	if err := n.rt.audit.Scan(ctx, acme, 0, 0, func(raw []byte, r contract.AuditRecord) error {
		if int64(len(raw)) > limit {
			tb.Errorf("audit record %d (%s): %d bytes, over max_payload %d", r.Seq, r.Kind, len(raw), limit)
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	natsstoretest.RequireValuesFit(tb, limit, "acme.>", n.rt.store.Intents, n.rt.store.Idempotency, n.rt.store.Approvals)
	rep, err := n.auditor.AuditVerify(ctx, "acme")
	if err != nil || !rep.Pass {
		tb.Fatalf("audit verify: %+v, %v", rep, err)
	}
	if doubt, err := n.agent.ListInDoubt(ctx, "acme"); err != nil || len(doubt) != 0 {
		tb.Fatalf("in doubt: %v, %v", doubt, err)
	}
}

// htmlOf is n bytes of an html page: JSON escapes a newline in each line
// (and encoding/json's default, HTML escaping, would make each <, > and &
// six bytes: 1.4 MB for 700,000).
func htmlOf(n int) string {
	line := "<p>a line of an ordinary page &amp; its markup</p>\n"
	return strings.Repeat(line, n/len(line)+1)[:n]
}

// TestLargeResultsFitTheirRecords is issue 15's acceptance: a result
// larger than the store's max_payload allows is cut and marked, and
// recorded like any other (succeeded, not 503, nothing in doubt), on a
// server started with a small max_payload; on a stock server's (1 MiB),
// the 700,000-byte fs.read comes back whole. Before this, that
// read answered 503 store_unavailable ("the action ran (succeeded) but
// its outcome could not be recorded; the execution is in doubt") because
// its claim, HTML-escaped, exceeded 1 MiB.
func TestLargeResultsFitTheirRecords(t *testing.T) {
	body := map[string]string{}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body[r.URL.Path])))
		io.WriteString(w, body[r.URL.Path])
	}))
	defer web.Close()
	tests := []struct {
		name       string
		maxPayload int32
		action     string
		content    string
		whole      bool // returned untruncated
	}{
		{"stock server: the issue's 700,000-byte html read", 1 << 20, "fs.read", htmlOf(700_000), true},
		{"stock server: 700,000 bytes of plain text", 1 << 20, "fs.read", strings.Repeat("x", 700_000), true},
		{"stock server: 2 MB read", 1 << 20, "fs.read", htmlOf(2_000_000), false},
		{"stock server: 700,000 control characters", 1 << 20, "fs.read", strings.Repeat("\x01", 700_000), false},
		{"small server: 400,000-byte read", natsstore.MinMaxPayload, "fs.read", htmlOf(400_000), false},
		{"small server: 400,000 invalid bytes", natsstore.MinMaxPayload, "fs.read", strings.Repeat("\xff", 400_000), false},
		{"small server: 400,000-byte http body", natsstore.MinMaxPayload, "http.get", htmlOf(400_000), false},
		{"small server: 100,000-byte read", natsstore.MinMaxPayload, "fs.read", htmlOf(100_000), true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startNode(t, tt.maxPayload, strings.TrimPrefix(web.URL, "http://"))
			name := "f" + strconv.Itoa(i)
			target := name
			key := "content"
			if tt.action == "http.get" {
				body["/"+name], target, key = tt.content, web.URL+"/"+name, "body"
			} else if err := os.WriteFile(filepath.Join(n.sandbox, name), []byte(tt.content), 0o640); err != nil {
				t.Fatal(err)
			}
			res, err := n.run(t, contract.IntentRequest{Action: tt.action, Target: target, IdempotencyKey: "large-" + name})
			var ce *client.Error
			if errors.As(err, &ce) {
				t.Fatalf("%s of %d bytes: HTTP %d %s: %s", tt.action, len(tt.content), ce.Status, ce.Code, ce.Message)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := res.Output[key]
			if res.Status != contract.StatusSucceeded {
				t.Fatalf("status %s: %s", res.Status, res.Error)
			}
			if tt.whole {
				if got != tt.content || res.Output[gate.OutputTruncated] != "" {
					t.Fatalf("%d of %d bytes, truncated %q; want it whole", len(got), len(tt.content), res.Output[gate.OutputTruncated])
				}
			} else if res.Output[gate.OutputTruncated] != "true" || res.Output[gate.OutputOriginalBytes] != strconv.Itoa(len(tt.content)) {
				t.Fatalf("truncated %q, original_bytes %q; want marked, %d", res.Output[gate.OutputTruncated], res.Output[gate.OutputOriginalBytes], len(tt.content))
			}
			// bytes and sha256 name the prefix returned (invalid UTF-8 reads
			// back as U+FFFD: compare the digest, not the string).
			kept, err := strconv.Atoi(res.Output["bytes"])
			if err != nil || kept > len(tt.content) || res.Output["sha256"] != fmt.Sprintf("%x", sha256.Sum256([]byte(tt.content[:kept]))) ||
				(utf8.ValidString(tt.content) && got != tt.content[:kept]) {
				t.Fatalf("bytes %q, sha256 %s: not the prefix returned (%d bytes)", res.Output["bytes"], res.Output["sha256"], len(got))
			}
			t.Logf("%d of %d bytes kept (max_payload %d)", kept, len(tt.content), tt.maxPayload)
			n.requireAllFits(t)
		})
	}
}

// TestStoreBelowTheMinimumIsRefused: a node does not start on a NATS
// server whose max_payload is below natsstore.MinMaxPayload, and says
// what to set.
func TestStoreBelowTheMinimumIsRefused(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	rt, err := openRuntime(context.Background(), ServeConfig{Store: StoreConfig{NATSURL: srv.ClientURL(), Sync: "default"}, SandboxDir: t.TempDir(), Node: "payload",
		Checkpoints: CheckpointConfig{KeyFile: filepath.Join(t.TempDir(), "audit-key.json")}}, prodDeps(nil))
	if err == nil {
		rt.Close()
		t.Fatal("a node started on a server with a 64 KiB max_payload")
	}
	if !errors.Is(err, natsstore.ErrMaxPayload) || !strings.Contains(err.Error(), "max_payload: 1MB") {
		t.Fatalf("refusal %v; want natsstore.ErrMaxPayload saying what to set", err)
	}
	t.Log(err)
}

// TestProposalTooLargeForTheStoreIs413: through the API, a proposal whose
// records would not fit the store's max_payload (a body the API accepts,
// under 1 MiB, on a 256 KiB server) is 413 body_too_large with reason
// record_too_large, and nothing is written.
func TestProposalTooLargeForTheStoreIs413(t *testing.T) {
	n := startNode(t, natsstore.MinMaxPayload, "")
	ctx := context.Background()
	seq, _, err := n.rt.audit.Head(ctx, tenant.MustParse("acme"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = n.agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: "big.txt", IdempotencyKey: "too-big",
		Params: map[string]string{"content": strings.Repeat("x", 200_000), "more": strings.Repeat("y", 200_000)}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusRequestEntityTooLarge || ce.Code != contract.CodeTooLarge || !slices.Equal(ce.Reasons, []string{gate.ReasonRecordTooLarge}) {
		t.Fatalf("propose = %v; want 413 %s (%s)", err, contract.CodeTooLarge, gate.ReasonRecordTooLarge)
	}
	t.Log(ce.Message)
	if after, _, err := n.rt.audit.Head(ctx, tenant.MustParse("acme")); err != nil || after != seq {
		t.Fatalf("audit head %d after the refusal, was %d (%v)", after, seq, err)
	}
	if keys, err := n.rt.store.Intents.Keys(ctx, "acme.>"); len(keys) != 0 {
		t.Fatalf("intents stored: %v (%v)", keys, err)
	}
}
