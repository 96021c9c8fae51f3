package natsstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

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
