package bench

import (
	"context"
	"net/http"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
)

// TestOneOnTheTypedClient: one operation of each scenario through the
// typed client against the real API handler counts as the harness means
// it: created (201), executed (200), blocked (403).
func TestOneOnTheTypedClient(t *testing.T) {
	srv := clienttest.Start(t)
	ctx := context.Background()
	api, err := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}))
	if err != nil {
		t.Fatal(err)
	}
	agent := api.With(client.WithAPIKey(srv.Keys[clienttest.Agent]))
	admin := api.With(client.WithAPIKey(srv.Keys[clienttest.Admin]))
	if !one(ctx, agent, "acme", "p-1", "propose") {
		t.Fatal("propose: not counted as created")
	}
	if one(ctx, agent, "acme", "p-1", "propose") {
		t.Fatal("propose of an existing idempotency key (HTTP 200) counted as created")
	}
	if !one(ctx, agent, "acme", "e-1", "execute") {
		t.Fatal("execute: not counted as executed")
	}
	if one(ctx, agent, "acme", "b-0", "blocked") {
		t.Fatal("blocked scenario: an execution that ran counted as blocked")
	}
	if err := setSwitch(ctx, admin, "acme", true, "test"); err != nil {
		t.Fatal(err)
	}
	if !one(ctx, agent, "acme", "b-1", "blocked") {
		t.Fatal("blocked scenario: a 403 not counted as blocked")
	}
	if one(ctx, agent, "acme", "e-2", "execute") {
		t.Fatal("execute: a blocked execution counted as executed")
	}
	if err := setSwitch(ctx, admin, "acme", false, "test"); err != nil {
		t.Fatal(err)
	}
	if err := setSwitch(ctx, agent, "", false, "test"); err == nil {
		t.Fatal("an agent flipped the global switch")
	}
}

func TestMetricValues(t *testing.T) {
	srv := clienttest.Start(t)
	ctx := context.Background()
	api, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	m := metricValues(ctx, api.With(client.WithAPIKey(srv.Keys[clienttest.Admin])), "go_goroutines", "no_such_gauge")
	if m[0] <= 0 || m[1] != -1 {
		t.Fatalf("admin: metrics = %v, want goroutines > 0 and -1 for the absent gauge", m)
	}
	m = metricValues(ctx, api.With(client.WithAPIKey(srv.Keys[clienttest.Agent])), "go_goroutines")
	if m[0] != -1 {
		t.Fatalf("agent: metrics = %v, want -1 (refused)", m)
	}
}
