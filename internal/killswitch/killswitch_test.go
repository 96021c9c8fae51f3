package killswitch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var acme = tenant.MustParse("acme")

func open(t *testing.T, cfg natsstore.Config, node string) (*killswitch.Switches, *natsstore.Store, *audit.Log) {
	t.Helper()
	st, err := natsstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	sw, err := killswitch.Start(context.Background(), killswitch.Config{Control: st.Control, Peers: st.Bus, Audit: log, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Stop)
	return sw, st, log
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDefaultIsEngagedAndChangesAreAudited(t *testing.T) {
	sw, _, log := open(t, natsstore.Config{DataDir: t.TempDir()}, "n1")
	g, ts := sw.Read(acme)
	if !g.Engaged || !ts.Engaged || g.Revision != 0 || ts.Revision != 0 || !g.Fresh || ts.Scope != "acme" {
		t.Fatalf("fresh store: %+v %+v, want engaged, never set, fresh", g, ts)
	}
	ctx := context.Background()
	ch, err := sw.Set(ctx, tenant.System, killswitch.Flip{Engaged: false, Reason: "go live", Actor: "key_admin", RequestID: "req_1"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Previous.Engaged != true || ch.Current.Engaged || ch.Current.Revision == 0 || !slices.Equal(ch.Propagation.Confirmed, []string{sw.Node()}) {
		t.Fatalf("change = %+v", ch)
	}
	if g, _ := sw.Read(acme); g.Engaged || g.Revision != ch.Current.Revision || g.Actor != "key_admin" || g.Reason != "go live" {
		t.Fatalf("after disengage: %+v", g)
	}
	if _, err := sw.Set(ctx, acme, killswitch.Flip{Engaged: false, Reason: "acme live", Actor: "key_op", RequestID: ""}); err != nil {
		t.Fatal(err)
	}
	// Global changes go to the system chain, tenant changes to the tenant's.
	for _, c := range []struct {
		t     tenant.ID
		scope string
	}{{tenant.System, `"scope":"global"`}, {acme, `"scope":"acme"`}} {
		var recs []contract.AuditRecord
		_ = log.Scan(ctx, c.t, 0, 0, func(_ []byte, r contract.AuditRecord) error { recs = append(recs, r); return nil })
		if len(recs) != 1 || recs[0].Kind != killswitch.KindChanged || !bytes.Contains(recs[0].Payload, []byte(c.scope)) ||
			!bytes.Contains(recs[0].Payload, []byte(`"previous":{"engaged":true`)) {
			t.Fatalf("%s chain: %+v", c.t, recs)
		}
	}
	// Readings validate against the additive V1 schema.
	_, ts = sw.Read(acme)
	raw, _ := json.Marshal(ts)
	if err := contract.Validate("killswitch_state", raw); err != nil {
		t.Fatalf("reading does not match killswitch_state schema: %v\n%s", err, raw)
	}
	if _, err := sw.Set(ctx, acme, killswitch.Flip{Engaged: true, Reason: "", Actor: "key_op", RequestID: ""}); err == nil {
		t.Fatal("a change without a reason was accepted")
	}
}

func TestUnreadableStateIsEngaged(t *testing.T) {
	sw, st, _ := open(t, natsstore.Config{DataDir: t.TempDir()}, "n1")
	if _, err := sw.Set(context.Background(), acme, killswitch.Flip{Engaged: false, Reason: "live", Actor: "op", RequestID: ""}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Control.Put(context.Background(), tenant.TenantSwitchKey(acme), []byte("{garbage"), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "garbage to read as engaged", func() bool { _, ts := sw.Read(acme); return ts.Engaged })
	if err := st.Control.Delete(context.Background(), tenant.TenantSwitchKey(acme), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deleted switch to read as engaged and never set", func() bool { _, ts := sw.Read(acme); return ts.Engaged && ts.Revision == 0 })
}

// TestStaleCopyIsNotFresh: when the node loses NATS, the copy stops being
// confirmed and reads stale within the bound (the gate then blocks).
func TestStaleCopyIsNotFresh(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	sw, _, _ := open(t, natsstore.Config{NATSURL: srv.ClientURL()}, "n1")
	if _, err := sw.Set(context.Background(), tenant.System, killswitch.Flip{Engaged: false, Reason: "live", Actor: "admin", RequestID: ""}); err != nil {
		t.Fatal(err)
	}
	if g, _ := sw.Read(acme); !g.Fresh || g.Engaged {
		t.Fatalf("before: %+v", g)
	}
	srv.Shutdown()
	start := time.Now()
	waitFor(t, "the copy to go stale", func() bool { g, _ := sw.Read(acme); return !g.Fresh })
	t.Logf("stale after %s (bound %s)", time.Since(start).Round(time.Millisecond), killswitch.Bound)
}

// TestPropagationWaitsForLivePeers: a change returns once every live node
// applied it; a node that heartbeats but lags is reported unconfirmed after
// the bound.
func TestPropagationWaitsForLivePeers(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	a, st, _ := open(t, natsstore.Config{NATSURL: srv.ClientURL(), Name: "a"}, "a")
	b, _, _ := open(t, natsstore.Config{NATSURL: srv.ClientURL(), Name: "b"}, "b")
	waitFor(t, "a to hear b", func() bool {
		ch, err := a.Set(context.Background(), tenant.System, killswitch.Flip{Engaged: false, Reason: "probe", Actor: "admin", RequestID: ""})
		return err == nil && slices.Contains(ch.Propagation.Confirmed, b.Node())
	})
	// A fake node that keeps announcing an old revision.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				_ = st.Bus.Publish(tenant.ControlAppliedSubject, []byte(`{"node":"laggard/00","applied":1}`))
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	ch, err := a.Set(context.Background(), tenant.System, killswitch.Flip{Engaged: true, Reason: "drill", Actor: "admin", RequestID: ""})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ch.Propagation.Confirmed, b.Node()) || !slices.Equal(ch.Propagation.Unconfirmed, []string{"laggard/00"}) {
		t.Fatalf("propagation = %+v", ch.Propagation)
	}
	if ch.Propagation.WaitedMS < killswitch.Bound.Milliseconds() {
		t.Fatalf("returned after %d ms without the laggard's acknowledgement", ch.Propagation.WaitedMS)
	}
	if g, _ := b.Read(acme); !g.Engaged || !strings.Contains(g.Reason, "drill") {
		t.Fatalf("b reads %+v", g)
	}
}
