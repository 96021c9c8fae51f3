package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore/natsstoretest"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// startNATSCluster runs three `exoarmur nats` processes n1, n2, n3, each
// given the other two's route URLs, and returns their client URLs (in
// that order) and route addresses. The cluster may still be electing its
// leader when it returns (natsstoretest.OpenCluster waits for it).
func startNATSCluster(t *testing.T) (urls, routes []string) {
	t.Helper()
	var clients []string
	for range 3 {
		clients = append(clients, freePort(t))
		routes = append(routes, freePort(t))
	}
	for i := range 3 {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, "nats-route://"+r)
			}
		}
		cmd := exec.Command(binary(t), "nats", "--data-dir", t.TempDir(), "--listen", clients[i], "--name", fmt.Sprintf("n%d", i+1),
			"--cluster-listen", routes[i], "--routes", strings.Join(others, ","))
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("nats n%d:\n%s", i+1, out.String())
			}
		})
	}
	for _, c := range clients {
		urls = append(urls, "nats://"+c)
	}
	return urls, routes
}

// TestExoarmurNATSCluster: three `exoarmur nats` processes, each given the
// other two's route URLs, form one JetStream cluster with no other
// software; a store opened on it at R3 places the audit stream on all
// three.
func TestExoarmurNATSCluster(t *testing.T) {
	urls, routes := startNATSCluster(t)
	st := natsstoretest.OpenCluster(t, urls, 3, 45*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 3)
	// A member without --cluster-listen cannot take --routes.
	if out, err := exec.Command(binary(t), "nats", "--data-dir", t.TempDir(), "--routes", "nats-route://"+routes[0]).CombinedOutput(); err == nil || !strings.Contains(string(out), "--cluster-listen") {
		t.Fatalf("--routes without --cluster-listen: %v %s", err, out)
	}
}

// TestAuditThroughEveryClusterServer: on a cluster of three `exoarmur
// nats` processes, where a serve node keeps the audit stream at R1 (on one
// server only), `audit verify` and `audit export` succeed through each of
// the three servers (two of them reach the stream through the cluster),
// agree with the node's own verification, export identical records that
// replay, and leave no consumer on the audit stream.
func TestAuditThroughEveryClusterServer(t *testing.T) {
	urls, _ := startNATSCluster(t)
	// The store, at R1 as serve declares it; opened here first to wait
	// for the cluster's leader.
	st := natsstoretest.OpenCluster(t, urls[:1], 1, 45*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 1)
	agent, admin := createKeys(t, "--nats-url", urls[0])
	addr := freePort(t)
	srv := startServer(t, "", addr, "--nats-url", urls[0], "--sandbox-dir", t.TempDir())
	goLive(t, addr, admin)
	ctx, c := t.Context(), srv.client(agent)
	// Writes (approved by the admin) and enough reads that a scan of the
	// chain takes more than one fetch (natsstore's batch: 512 records).
	for i := range 5 {
		v, _, err := c.Propose(ctx, "acme", contract.IntentRequest{
			Action: "fs.write", Target: fmt.Sprintf("scan/f%d.txt", i), Params: map[string]string{"content": "x"}, IdempotencyKey: fmt.Sprint("scan-w", i),
		})
		if err != nil {
			t.Fatalf("propose write %d: %v", i, err)
		}
		srv.approveVia(admin, "acme", v.Intent.ID)
		if _, err := c.Execute(ctx, "acme", v.Intent.ID); err != nil {
			t.Fatalf("execute write %d: %v", i, err)
		}
	}
	for i := range 130 {
		v, _, err := c.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: fmt.Sprintf("scan/f%d.txt", i%5), IdempotencyKey: fmt.Sprint("scan-r", i)})
		if err != nil {
			t.Fatalf("propose read %d: %v", i, err)
		}
		if _, err := c.Execute(ctx, "acme", v.Intent.ID); err != nil {
			t.Fatalf("execute read %d: %v", i, err)
		}
	}
	rep, err := c.AuditVerify(ctx, "acme")
	if err != nil || !rep.Pass || rep.Records <= 512 {
		t.Fatalf("the node's verification: %v %+v; want a passing chain of more than 512 records", err, rep)
	}
	natsstoretest.RequireNoConsumers(t, st, tenant.AuditStream, "the node's verification")
	s, err := st.JS.Stream(ctx, tenant.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("acme's chain: %d records; the audit stream at R%d on %s", rep.Records, info.Config.Replicas, info.Cluster.Leader)

	dir := t.TempDir()
	var first []byte
	for i, u := range urls {
		want := fmt.Sprintf("audit chain of acme verifies: %d records, ", rep.Records)
		if out := run(t, "audit", "verify", "--nats-url", u, "--tenant", "acme"); !strings.HasPrefix(out, want) {
			t.Fatalf("audit verify through n%d: %s; want %q...", i+1, out, want)
		}
		natsstoretest.RequireNoConsumers(t, st, tenant.AuditStream, fmt.Sprintf("audit verify through n%d", i+1))
		file := filepath.Join(dir, fmt.Sprintf("n%d.jsonl", i+1))
		run(t, "audit", "export", "--nats-url", u, "--tenant", "acme", "--out", file)
		natsstoretest.RequireNoConsumers(t, st, tenant.AuditStream, fmt.Sprintf("audit export through n%d", i+1))
		export, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := uint64(bytes.Count(export, []byte("\n"))); got != rep.Records {
			t.Fatalf("export through n%d holds %d records, want %d", i+1, got, rep.Records)
		}
		if first == nil {
			first = export
		} else if !bytes.Equal(export, first) {
			t.Fatalf("export through n%d differs from the export through n1", i+1)
		}
		if out := run(t, "replay", "--from-export", file, "--tenant", "acme"); !strings.Contains(out, `"pass":true`) {
			t.Fatalf("replay of the export through n%d: %s", i+1, out)
		}
	}
}
