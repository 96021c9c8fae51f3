package natsstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/archive"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// confinedServer runs `exoarmur nats --users` with an admin and a node user
// confined to acme, and returns the URLs each logs in with.
func confinedServer(t *testing.T) (adminURL, nodeURL string) {
	t.Helper()
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Port: 0, Users: []natsstore.User{
		{Name: "admin", Password: "admin-pw", Admin: true},
		{Name: "node-acme", Password: "acme-pw", Tenants: []string{"acme"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return strings.Replace(srv.ClientURL(), "nats://", "nats://admin:admin-pw@", 1), strings.Replace(srv.ClientURL(), "nats://", "nats://node-acme:acme-pw@", 1)
}

func openURL(t *testing.T, url string) *natsstore.Store {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{NATSURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// refusedBy fails unless the call failed and the broker reported a
// permissions violation on subject on st's connection.
func refusedBy(t *testing.T, st *natsstore.Store, what string, err error, subject string) {
	t.Helper()
	last := st.NC.LastError()
	if err == nil || last == nil || !strings.Contains(strings.ToLower(last.Error()), "permissions violation") || !strings.Contains(last.Error(), `"`+subject+`"`) {
		t.Errorf("%s: err %v, broker said %v; want a permissions violation on %s", what, err, last, subject)
	}
}

// TestNodeUserConfinedAtTheBroker: a node whose NATS user is confined to
// tenant acme can write acme's audit chain and keys, and the broker refuses
// its writes to beta's, whatever the application layer asks for. This is
// the second layer of tenant isolation.
func TestNodeUserConfinedAtTheBroker(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Port: 0, Users: []natsstore.User{
		{Name: "admin", Password: "admin-pw", Admin: true},
		{Name: "node-acme", Password: "acme-pw", Tenants: []string{"acme"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	url := strings.Replace(srv.ClientURL(), "nats://", "nats://%s@", 1)
	ctx := context.Background()
	if _, err := natsstore.Open(ctx, natsstore.Config{NATSURL: strings.Replace(url, "%s@", "", 1)}); err == nil {
		t.Fatal("an anonymous client connected")
	}
	admin, err := natsstore.Open(ctx, natsstore.Config{NATSURL: strings.Replace(url, "%s", "admin:admin-pw", 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	node, err := natsstore.Open(ctx, natsstore.Config{NATSURL: strings.Replace(url, "%s", "node-acme:acme-pw", 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()

	acme, beta := tenant.MustParse("acme"), tenant.MustParse("beta")
	log := audit.New(node.Audit)
	if _, err := log.Append(ctx, acme, audit.Entry{Kind: "test.ok", Time: time.Unix(0, 0), Payload: map[string]string{}}); err != nil {
		t.Fatalf("append to own chain: %v", err)
	}
	if _, err := node.Intents.KeyValue().Put(ctx, tenant.IntentKey(acme, "in_1"), []byte("{}")); err != nil {
		t.Fatalf("write own intent: %v", err)
	}
	// refused: the call failed, and the broker said why on the connection.
	refused := func(what string, err error, subject string) {
		t.Helper()
		last := node.NC.LastError()
		if err == nil || last == nil || !strings.Contains(strings.ToLower(last.Error()), "permissions violation") || !strings.Contains(last.Error(), subject) {
			t.Errorf("%s: err %v, broker said %v; want a permissions violation on %s", what, err, last, subject)
		}
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }
	c1, cancel1 := short()
	defer cancel1()
	_, err = log.Append(c1, beta, audit.Entry{Kind: "test.bad", Time: time.Unix(0, 0), Payload: map[string]string{}})
	refused("append to beta's chain", err, tenant.AuditSubject(beta))
	c2, cancel2 := short()
	defer cancel2()
	_, err = node.Intents.KeyValue().Put(c2, tenant.IntentKey(beta, "in_1"), []byte("{}"))
	refused("write beta's intent", err, tenant.IntentKey(beta, "in_1"))
	c3, cancel3 := short()
	defer cancel3()
	_, err = node.Control.KeyValue().Put(c3, tenant.GlobalSwitchKey, []byte(`{"engaged":false}`))
	refused("flip the global switch without the global grant", err, tenant.GlobalSwitchKey)
	c4, cancel4 := short()
	defer cancel4()
	refused("purge the audit stream", node.Audit.Stream().Purge(c4), "$JS.API.STREAM.PURGE."+tenant.AuditStream)

	// Nothing of beta's was written.
	if seq, _, err := audit.New(admin.Audit).Head(ctx, beta); err != nil || seq != 0 {
		t.Fatalf("beta's chain head = %d, %v", seq, err)
	}
	if _, err := admin.Intents.KeyValue().Get(ctx, tenant.IntentKey(beta, "in_1")); err == nil {
		t.Fatal("beta's intent exists")
	}
}

// TestConfinedNodeNeedsAPreparedStore: a confined node may not create or
// update streams, so it starts only on the streams and buckets an
// unconfined node or the NATS admin user declared. On a missing stream, or
// one whose configuration differs from ExoArmur's, it fails at once with
// ErrNotPrepared naming the stream; once an unconfined node has declared
// them (again), it starts, and opening uses what is there without an
// update.
func TestConfinedNodeNeedsAPreparedStore(t *testing.T) {
	adminURL, nodeURL := confinedServer(t)
	ctx := context.Background()
	notPrepared := func(stream, why string) {
		t.Helper()
		start := time.Now()
		st, err := natsstore.Open(ctx, natsstore.Config{NATSURL: nodeURL})
		if err == nil {
			st.Close()
			t.Fatalf("a confined node opened a store with stream %s: %s", stream, why)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("refusal took %v; the broker's permissions violation should end it at once", took)
		}
		if !errors.Is(err, natsstore.ErrNotPrepared) || !strings.Contains(err.Error(), "stream "+stream+":") ||
			!strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "NATS admin user") {
			t.Fatalf("confined open, stream %s: %s: %v; want ErrNotPrepared naming it", stream, why, err)
		}
		t.Log(err)
	}
	notPrepared(tenant.AuditStream, "missing")

	admin := openURL(t, adminURL)
	admin.Close() // the admin prepared the store
	openURL(t, nodeURL).Close()

	// An operator changed a setting ExoArmur relies on.
	admin = openURL(t, adminURL)
	info, err := admin.Work.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.Duplicates = time.Minute
	if _, err := admin.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	notPrepared(tenant.WorkStream, "duplicate_window is 1m0s, want 10m0s")

	// An unconfined node declares it again.
	admin = openURL(t, adminURL)
	if info, err := admin.Work.Stream().Info(ctx); err != nil || info.Config.Duplicates != 10*time.Minute {
		t.Fatalf("unconfined open left duplicates at %v (%v)", info.Config.Duplicates, err)
	}
	node := openURL(t, nodeURL)
	if err := node.NC.LastError(); err != nil {
		t.Fatalf("opening a prepared store: %v", err)
	}
}

// TestConfinedNodeCannotChangeStreams: a confined node can neither update
// a stream (shrinking the shared audit stream's limits with discard old
// would drop every other tenant's records), nor create or delete one, nor
// delete the work consumer every node's worker shares; the ordered
// consumers of its own audit scans it still creates and deletes.
func TestConfinedNodeCannotChangeStreams(t *testing.T) {
	adminURL, nodeURL := confinedServer(t)
	admin := openURL(t, adminURL)
	node := openURL(t, nodeURL)
	ctx := context.Background()
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	beta := tenant.MustParse("beta")
	alog := audit.New(admin.Audit)
	for range 3 {
		if _, err := alog.Append(ctx, beta, audit.Entry{Kind: "test.ok", Time: time.Unix(0, 0), Payload: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}

	info, err := node.JS.Stream(ctx, tenant.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardOld
	_, err = node.JS.UpdateStream(short(), cfg)
	refusedBy(t, node, "truncate the audit stream", err, "$JS.API.STREAM.UPDATE."+tenant.AuditStream)
	_, err = node.JS.CreateStream(short(), jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
	refusedBy(t, node, "create a stream", err, "$JS.API.STREAM.CREATE.ROGUE")
	refusedBy(t, node, "delete the audit stream", node.JS.DeleteStream(short(), tenant.AuditStream), "$JS.API.STREAM.DELETE."+tenant.AuditStream)

	if _, err := admin.Work.Consumer(ctx, tenant.WorkConsumer, tenant.WorkSubjects, time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	refusedBy(t, node, "delete the shared work consumer", node.JS.DeleteConsumer(short(), tenant.WorkStream, tenant.WorkConsumer),
		"$JS.API.CONSUMER.DELETE."+tenant.WorkStream+"."+tenant.WorkConsumer)
	if _, err := admin.JS.Consumer(ctx, tenant.WorkStream, tenant.WorkConsumer); err != nil {
		t.Fatalf("the work consumer: %v", err)
	}
	// The node's worker binds the shared consumer.
	if _, err := node.Work.Consumer(ctx, tenant.WorkConsumer, tenant.WorkSubjects, time.Minute, 5); err != nil {
		t.Fatalf("bind the work consumer: %v", err)
	}

	// beta's chain is whole, as the node's own scan reads it; the scan's
	// consumer is gone when it returns (the node deleted it).
	n := 0
	if err := audit.New(node.Audit).Scan(ctx, beta, 0, 0, func([]byte, contract.AuditRecord) error { n++; return nil }); err != nil || n != 3 {
		t.Fatalf("beta's chain: %d records, %v; want 3", n, err)
	}
	si, err := admin.Audit.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != 3 || si.State.Consumers != 0 {
		t.Fatalf("audit stream holds %d messages and %d consumers after the node's scan, want 3 and none", si.State.Msgs, si.State.Consumers)
	}
}

// TestConfinedNodeCannotRewriteTheArchive: the policy archive is
// write-once at the server, for every user: once a bundle is archived, an
// overwrite, a delete marker, a purge marker and a rollup of the bucket are
// refused (by a confined node and by the admin alike), and the bundle
// still verifies, so every other node still starts (archive.Put) and
// replays; the junk and forgeries a node can still add under new keys are
// left out of the library.
func TestConfinedNodeCannotRewriteTheArchive(t *testing.T) {
	adminURL, nodeURL := confinedServer(t)
	admin := openURL(t, adminURL)
	node := openURL(t, nodeURL)
	ctx := context.Background()
	a := archive.New(admin.Policies)
	bundle := policy.Default()
	if err := a.Put(ctx, bundle); err != nil {
		t.Fatal(err)
	}
	h := bundle.Hash()
	for _, st := range []*natsstore.Store{node, admin} {
		b := st.Policies.KeyValue()
		_, err := b.Put(ctx, h, []byte("garbage"))
		serverRefused(t, "overwrite an archived bundle", err)
		_, err = b.Update(ctx, h, []byte("garbage"), 1)
		serverRefused(t, "overwrite an archived bundle over its revision", err)
		serverRefused(t, "delete an archived bundle", b.Delete(ctx, h))
		serverRefused(t, "purge an archived bundle", b.Purge(ctx, h))
		m := &nats.Msg{Subject: tenant.KVSubject(tenant.PoliciesBucket, "0000"), Header: nats.Header{}, Data: []byte("x")}
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
		_, err = st.JS.PublishMsg(ctx, m)
		serverRefused(t, "roll the archive up", err)
	}
	if e, err := admin.Policies.KeyValue().Get(ctx, h); err != nil || e.Revision() != 1 || string(e.Value()) != string(bundle.Source()) {
		t.Fatalf("the archived bundle after the attempts: %v", err)
	}
	if err := archive.New(node.Policies).Put(ctx, bundle); err != nil {
		t.Fatalf("another node archiving the same bundle: %v", err)
	}
	// What a node can still write, a junk key or a forged source under a
	// hash not archived yet, is left out of the library, naming it.
	forgedUnder := strings.Repeat("ab", 32)
	for _, key := range []string{"not-a-hash", forgedUnder} {
		if _, err := node.Policies.KeyValue().Create(ctx, key, []byte("permit(principal, action, resource);")); err != nil {
			t.Fatal(err)
		}
	}
	lib, err := a.Library(ctx, policy.Builtin())
	if err != nil {
		t.Fatalf("library with what a node wrote: %v", err)
	}
	if _, err := lib.Lookup(h); err != nil {
		t.Fatalf("the archived bundle: %v", err)
	}
	if _, err := lib.Lookup(forgedUnder); !errors.Is(err, archive.ErrCorrupt) || len(lib.Corrupt()) != 2 {
		t.Fatalf("the forged entry: %v (left out: %v)", err, lib.Corrupt())
	}
}

// serverRefused fails unless JetStream refused the write (an API error
// from the server, not a client-side check).
func serverRefused(t *testing.T, what string, err error) {
	t.Helper()
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		t.Errorf("%s: %v; want the server's refusal", what, err)
	}
}
