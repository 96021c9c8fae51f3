package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/natsstore/natsstoretest"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// natsMember is one `exoarmur nats` process of a test cluster.
type natsMember struct {
	t                    *testing.T
	name, client, route  string
	dataDir, peersRoutes string
	cmd                  *exec.Cmd
	logs                 *syncBuffer
}

// natsCluster is n `exoarmur nats` processes on loopback, each routed to
// the others: a JetStream cluster with no other software.
type natsCluster struct {
	members []*natsMember
}

// startNATSCluster starts n members and returns once each accepts client
// connections (the cluster may still be electing its leaders: open a
// store with natsstoretest.OpenCluster or retry).
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	for i := range n {
		c.members = append(c.members, &natsMember{t: t, name: fmt.Sprintf("n%d", i+1), client: freePort(t), route: freePort(t), dataDir: t.TempDir()})
	}
	for i, m := range c.members {
		var others []string
		for j, o := range c.members {
			if j != i {
				others = append(others, "nats-route://"+o.route)
			}
		}
		m.peersRoutes = strings.Join(others, ",")
		m.start()
	}
	for _, m := range c.members {
		m.waitListening()
	}
	return c
}

func (m *natsMember) start() {
	m.t.Helper()
	m.cmd = exec.Command(binary(m.t), "nats", "--data-dir", m.dataDir, "--listen", m.client, "--name", m.name,
		"--cluster-listen", m.route, "--routes", m.peersRoutes)
	m.logs = &syncBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	cmd, logs := m.cmd, m.logs
	m.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		if m.t.Failed() {
			m.t.Logf("nats %s:\n%s", m.name, logs.String())
		}
	})
}

func (m *natsMember) waitListening() {
	m.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", m.client); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("nats %s not listening:\n%s", m.name, m.logs.String())
		}
	}
}

// kill sends SIGKILL: the member stops at once, as in a crash.
func (m *natsMember) kill() {
	if m.cmd.ProcessState == nil {
		_ = m.cmd.Process.Signal(syscall.SIGKILL)
		_ = m.cmd.Wait()
	}
}

// restart starts a killed member again on its data dir and ports.
func (m *natsMember) restart() {
	m.t.Helper()
	m.start()
	m.waitListening()
}

func (m *natsMember) url() string { return "nats://" + m.client }

// urls is every member's client URL.
func (c *natsCluster) urls() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.url())
	}
	return out
}

// url is the comma-separated list of every member's client URL, as
// --nats-url takes it.
func (c *natsCluster) url() string { return strings.Join(c.urls(), ",") }

// member is the member named name (a stream's leader, as the cluster
// reports it).
func (c *natsCluster) member(t *testing.T, name string) *natsMember {
	t.Helper()
	for _, m := range c.members {
		if m.name == name {
			return m
		}
	}
	t.Fatalf("no member %q", name)
	return nil
}

// TestExoarmurNATSCluster: three `exoarmur nats` processes, each given the
// other two's route URLs, form one JetStream cluster with no other
// software; a store opened on it at R3 places the audit stream on all
// three.
func TestExoarmurNATSCluster(t *testing.T) {
	c := startNATSCluster(t, 3)
	st := natsstoretest.OpenCluster(t, c.urls(), 3, 45*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 3)
	// A member without --cluster-listen cannot take --routes.
	if out, err := exec.Command(binary(t), "nats", "--data-dir", t.TempDir(), "--routes", "nats-route://"+c.members[0].route).CombinedOutput(); err == nil || !strings.Contains(string(out), "--cluster-listen") {
		t.Fatalf("--routes without --cluster-listen: %v %s", err, out)
	}
}

// clusterKey creates a key on the cluster through the CLI, opening the
// store at R3 (which the first call creates).
func clusterKey(t *testing.T, url, name, role, actions string, tenants ...string) string {
	t.Helper()
	args := []string{"keys", "create", "--nats-url", url, "--nats-replicas", "3", "--name", name, "--role", role, "--actions", actions}
	for _, tn := range tenants {
		args = append(args, "--tenant", tn)
	}
	var key string
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, err := exec.Command(binary(t), args...).Output()
		if key = strings.TrimSpace(string(out)); err == nil && strings.HasPrefix(key, "exo_") {
			return key
		}
		if time.Now().After(deadline) { // the cluster may still be electing its leaders
			t.Fatalf("keys create on the cluster: %v %q", err, out)
		}
	}
}

// TestReadAfterWriteAtR3: two serve nodes, each connected to a different
// server of a three-server cluster at R3; 5,000 proposals each followed at
// once by its execution on the other node: never a 404 (a read answered by
// a replica that had not applied the proposal yet).
func TestReadAfterWriteAtR3(t *testing.T) {
	c := startNATSCluster(t, 3)
	root := clusterKey(t, c.url(), "root", "admin", "*", "system", "acme")
	bot := clusterKey(t, c.url(), "bot", "agent", "fs.read", "acme")
	sandbox := t.TempDir()
	addrA, addrB := freePort(t), freePort(t)
	startServer(t, "", addrA, append([]string{"--nats-url", c.members[0].url(), "--sandbox-dir", sandbox, "--node", "node-a"}, noLimits...)...)
	startServer(t, "", addrB, append([]string{"--nats-url", c.members[1].url(), "--sandbox-dir", sandbox, "--node", "node-b"}, noLimits...)...)
	goLive(t, addrA, root)
	nodes := []*client.Client{newClient(t, addrA, bot), newClient(t, addrB, bot)}

	const pairs, workers = 5000, 8
	var next, notFound, unavailable atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > pairs || ctx.Err() != nil {
					return
				}
				from, to := nodes[i%2], nodes[(i+1)%2]
				// A 503 (the store did not answer in time, on a loaded
				// machine) is retried with the same request, as a client
				// does; only a 404 is what this test is about.
				var v gate.View
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					if v, _, err = from.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "none.txt", IdempotencyKey: fmt.Sprint("raw-", i)}); refusal(err).Status != 503 {
						break
					}
					unavailable.Add(1)
				}
				if err == nil {
					for attempt := 0; attempt < 5; attempt++ {
						if _, err = to.Execute(ctx, "acme", v.Intent.ID); refusal(err).Status != 503 {
							break
						}
						unavailable.Add(1)
					}
				}
				if err != nil {
					if refusal(err).Status == 404 {
						notFound.Add(1)
					}
					mu.Lock()
					if len(failures) < 5 {
						failures = append(failures, fmt.Sprintf("pair %d: %v", i, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		t.Fatalf("%d of %d pairs within the bound: %v", next.Load()-workers, pairs, err)
	}
	if notFound.Load() != 0 || len(failures) != 0 {
		t.Fatalf("%d of %d executions right after their proposal answered 404; failures (first 5): %v", notFound.Load(), pairs, failures)
	}
	t.Logf("%d pairs, 0 answered 404; %d requests answered 503 and were retried", pairs, unavailable.Load())
}

// TestAuditThroughEveryClusterServer: on a cluster of three `exoarmur
// nats` processes, where a serve node keeps the audit stream at R1 (on one
// server only), `audit verify` and `audit export` succeed through each of
// the three servers (two of them reach the stream through the cluster),
// agree with the node's own verification, export identical records that
// replay, and leave no consumer on the audit stream.
func TestAuditThroughEveryClusterServer(t *testing.T) {
	urls := startNATSCluster(t, 3).urls()
	// The store, at R1 as serve declares it; opened here first to wait
	// for the cluster's leader.
	st := natsstoretest.OpenCluster(t, urls[:1], 1, 45*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 1)
	agent, admin := createKeys(t, "--nats-url", urls[0])
	addr := freePort(t)
	srv := startServer(t, "", addr, append([]string{"--nats-url", urls[0], "--sandbox-dir", t.TempDir()}, noLimits...)...)
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
	rep, err := srv.client(admin).AuditVerify(ctx, "acme") // the tenant's whole audit: not an agent's
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
		// No audit key file: an export without a checkpoint line, the same
		// bytes through every server.
		run(t, "audit", "export", "--nats-url", u, "--tenant", "acme", "--out", file, "--audit-key", filepath.Join(dir, "no-key.json"))
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
