package active_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/active"
	"github.com/exoarmur/exoarmur/internal/policy/archive"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// node is one ExoArmur node's switches and active bundles on a shared
// store (each with its own watcher and acknowledgements, as two
// processes would have).
type node struct {
	set *active.Set
	sw  *killswitch.Switches
}

func startNode(tb testing.TB, st *natsstore.Store, log *audit.Log, name string) node {
	tb.Helper()
	v, err := policy.NewValidator(action.Builtin().PolicyTypes())
	if err != nil {
		tb.Fatal(err)
	}
	set, err := active.New(active.Config{Base: policy.Default(), Validator: v, Archive: archive.New(st.Policies), Control: st.Control, Audit: log, Retry: 50 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	sw, err := killswitch.Start(context.Background(), killswitch.Config{Control: st.Control, Peers: st.Bus, Audit: log, Node: name, Others: set})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sw.Stop)
	set.Attach(sw)
	return node{set, sw}
}

func openStore(tb testing.TB) (*natsstore.Store, *audit.Log) {
	tb.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st, audit.New(st.Audit)
}

// strictFiles is the default bundle plus one forbid: no fs.write at all.
func strictFiles() []policy.File {
	files := policy.SplitSource(policy.Default().Source())
	return append(files, policy.File{Name: "zz-no-writes.cedar", Source: []byte(`@id("no-writes")
@scope("action")
forbid (principal, action == Action::"fs.write", resource);
`)})
}

var (
	acme = tenant.MustParse("acme")
	beta = tenant.MustParse("beta")
)

func records(tb testing.TB, log *audit.Log, t tenant.ID, kind string) []contract.AuditRecord {
	tb.Helper()
	var out []contract.AuditRecord
	if err := log.Scan(context.Background(), t, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		if r.Kind == kind {
			out = append(out, r)
		}
		return nil
	}); err != nil && !errors.Is(err, kv.ErrNotFound) {
		tb.Fatal(err)
	}
	return out
}

// TestActivationReachesEveryNode: an activation on node A returns after
// node B applied it; B then decides the tenant under the new bundle, the
// other tenant keeps the base, and the audit says who, why, old and new.
func TestActivationReachesEveryNode(t *testing.T) {
	st, log := openStore(t)
	a := startNode(t, st, log, "a")
	b := startNode(t, st, log, "b")
	// B must have been heard from, as a live peer, before A waits for it.
	time.Sleep(700 * time.Millisecond)

	ctx := context.Background()
	act, err := a.set.Activate(ctx, active.Request{Scope: acme, Files: strictFiles(), Actor: "key_op", Reason: "CHG-1: no writes"})
	if err != nil {
		t.Fatal(err)
	}
	base := policy.Default().Hash()
	if act.Previous != base || act.PreviousSource != "node" || act.Hash == base {
		t.Fatalf("activation %+v: want previous = the base %s, a new hash", act, base)
	}
	if len(act.Propagation.Confirmed) != 2 || len(act.Propagation.Unconfirmed) != 0 {
		t.Fatalf("propagation %+v: want both nodes confirmed", act.Propagation)
	}
	// No wait: B confirmed applying it.
	got, hash, err := b.set.For(acme)
	if err != nil || hash != act.Hash || got.Hash() != act.Hash {
		t.Fatalf("node b decides acme under %s (%v), want %s", hash, err, act.Hash)
	}
	if _, hash, _ := b.set.For(beta); hash != base {
		t.Fatalf("node b decides beta under %s, want the base %s", hash, base)
	}
	recs := records(t, log, acme, active.KindActivated)
	if len(recs) != 1 {
		t.Fatalf("%d policy.activated records, want 1", len(recs))
	}
	var p map[string]any
	if err := json.Unmarshal(recs[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if recs[0].Actor != "key_op" || p["reason"] != "CHG-1: no writes" || p["hash"] != act.Hash || p["previous"] != base || p["scope"] != "acme" {
		t.Fatalf("record actor %s payload %v", recs[0].Actor, p)
	}

	// The same bundle again: nothing written, nothing recorded.
	again, err := b.set.Activate(ctx, active.Request{Scope: acme, Files: strictFiles(), Actor: "key_op", Reason: "again"})
	if err != nil || !again.Unchanged {
		t.Fatalf("re-activation %+v, %v: want unchanged", again, err)
	}
	if n := len(records(t, log, acme, active.KindActivated)); n != 1 {
		t.Fatalf("%d records after an unchanged activation, want 1", n)
	}
}

// TestGlobalIsTheDefault: the global bundle applies to every tenant
// without its own; a tenant's own wins over it.
func TestGlobalIsTheDefault(t *testing.T) {
	st, log := openStore(t)
	a := startNode(t, st, log, "a")
	ctx := context.Background()
	glob, err := a.set.Activate(ctx, active.Request{Scope: tenant.System, Files: strictFiles(), Actor: "key_admin", Reason: "global"})
	if err != nil {
		t.Fatal(err)
	}
	if len(records(t, log, tenant.System, active.KindActivated)) != 1 {
		t.Fatal("the global activation is not in the system chain")
	}
	for _, tn := range []tenant.ID{acme, beta} {
		if _, h, _ := a.set.For(tn); h != glob.Hash {
			t.Fatalf("%s decides under %s, want the global %s", tn, h, glob.Hash)
		}
	}
	own := append(strictFiles(), policy.File{Name: "zz-no-http.cedar", Source: []byte("@id(\"no-http\")\n@scope(\"action\")\nforbid (principal, action, resource is Url);\n")})
	mine, err := a.set.Activate(ctx, active.Request{Scope: acme, Files: own, Actor: "key_op", Reason: "own"})
	if err != nil {
		t.Fatal(err)
	}
	if mine.Previous != glob.Hash || mine.PreviousSource != active.ScopeGlobal {
		t.Fatalf("acme's previous %s from %s, want the global %s", mine.Previous, mine.PreviousSource, glob.Hash)
	}
	if _, h, _ := a.set.For(acme); h != mine.Hash {
		t.Fatalf("acme decides under %s, want its own %s", h, mine.Hash)
	}
	if _, h, _ := a.set.For(beta); h != glob.Hash {
		t.Fatalf("beta decides under %s, want the global %s", h, glob.Hash)
	}
	if d := a.set.Describe(beta); d.Source != active.ScopeGlobal || d.Ptr == nil || d.Ptr.Actor != "key_admin" {
		t.Fatalf("describe beta: %+v", d)
	}
}

// TestInvalidActivationWritesNothing: a bundle that does not validate,
// breaks a floor, or comes without a reason changes no pointer and
// records nothing.
func TestInvalidActivationWritesNothing(t *testing.T) {
	st, log := openStore(t)
	a := startNode(t, st, log, "a")
	ctx := context.Background()
	unknownAttr := append(policy.SplitSource(policy.Default().Source()), policy.File{Name: "typo.cedar", Source: []byte("@id(\"typo\")\n@scope(\"action\")\nforbid (principal, action, resource) when { context.nosuch == 1 };\n")})
	agentApproves := append(policy.SplitSource(policy.Default().Source()), policy.File{Name: "open.cedar", Source: []byte("@id(\"open\")\n@scope(\"operation\")\npermit (principal, action == Action::\"activate_policy\", resource);\n")})
	for _, tc := range []struct {
		name   string
		req    active.Request
		reason string
	}{
		{"unknown attribute", active.Request{Scope: acme, Files: unknownAttr, Actor: "key_op", Reason: "r"}, "typo.cedar"},
		{"a floor broken", active.Request{Scope: acme, Files: agentApproves, Actor: "key_op", Reason: "r"}, "activate_policy"},
		{"no files", active.Request{Scope: acme, Actor: "key_op", Reason: "r"}, "no *.cedar"},
		{"a bad file name", active.Request{Scope: acme, Files: []policy.File{{Name: "../x.cedar", Source: []byte("")}}, Actor: "key_op", Reason: "r"}, "NAME.cedar"},
		{"no reason", active.Request{Scope: acme, Files: strictFiles(), Actor: "key_op"}, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.set.Activate(ctx, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("err %v, want one naming %q", err, tc.reason)
			}
			if _, err := st.Control.Get(ctx, tenant.TenantPolicyKey(acme)); !errors.Is(err, kv.ErrNotFound) {
				t.Fatalf("a pointer was written: %v", err)
			}
			if n := len(records(t, log, acme, active.KindActivated)); n != 0 {
				t.Fatalf("%d records", n)
			}
		})
	}
}

// TestUnusablePointerDenies: a pointer this node cannot apply (its
// bundle not in the archive, or unreadable) makes For fail, never fall
// back to the base or the global bundle; once its bundle can be loaded,
// the node applies it on retry.
func TestUnusablePointerDenies(t *testing.T) {
	st, log := openStore(t)
	a := startNode(t, st, log, "a")
	ctx := context.Background()
	strict, err := policy.LoadFiles("x", strictFiles(), mustValidator(t))
	if err != nil {
		t.Fatal(err)
	}
	ptr, _ := json.Marshal(active.Pointer{Hash: strict.Hash(), Actor: "key_op", Reason: "before its bundle"})
	rev, err := st.Control.Put(ctx, tenant.TenantPolicyKey(acme), ptr, kv.PutOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.sw.Propagate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	b, hash, err := a.set.For(acme)
	if b != nil || hash != strict.Hash() || !errors.Is(err, active.ErrUnavailable) {
		t.Fatalf("For = %v, %s, %v: want no bundle, the pointer's hash, ErrUnavailable", b, hash, err)
	}
	if d := a.set.Describe(acme); d.Error == "" {
		t.Fatalf("describe %+v: want the error", d)
	}
	// The bundle arrives in the archive: the retry applies it.
	if err := archive.New(st.Policies).Put(ctx, strict); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, h, err := a.set.For(acme)
		if err == nil && h == strict.Hash() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not applied on retry: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An unreadable pointer: denied too.
	cur, _ := st.Control.Get(ctx, tenant.TenantPolicyKey(acme))
	rev, err = st.Control.Put(ctx, tenant.TenantPolicyKey(acme), []byte("{not json"), kv.PutOptions{Revision: cur.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.sw.Propagate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.set.For(acme); !errors.Is(err, active.ErrUnavailable) {
		t.Fatalf("unreadable pointer: %v, want ErrUnavailable", err)
	}
	// An activation through the API still replaces it (recovery).
	rec, err := a.set.Activate(ctx, active.Request{Scope: acme, Files: policy.SplitSource(policy.Default().Source()), Actor: "key_op", Reason: "recover"})
	if err != nil {
		t.Fatal(err)
	}
	if _, h, err := a.set.For(acme); err != nil || h != rec.Hash {
		t.Fatalf("after recovery %s %v", h, err)
	}
}

func mustValidator(tb testing.TB) *policy.Validator {
	tb.Helper()
	v, err := policy.NewValidator(action.Builtin().PolicyTypes())
	if err != nil {
		tb.Fatal(err)
	}
	return v
}
