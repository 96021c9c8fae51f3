package natsstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/natsstore/natsstoretest"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster runs n clustered servers on loopback and returns their
// client URLs.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	routePorts := make([]int, n)
	for i := range routePorts {
		routePorts[i] = freeLoopbackPort(t)
	}
	var urls []string
	for i := range n {
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Name: fmt.Sprintf("n%d", i+1),
			Cluster: natsstore.Cluster{Name: "test", Port: routePorts[i], Routes: routes}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		urls = append(urls, srv.ClientURL())
	}
	return urls
}

// TestThreeServersFormAJetStreamCluster: three servers started with
// Cluster settings (as three `exoarmur nats --cluster-listen --routes`
// processes are) form a JetStream cluster, and a store opened on it at R3
// places every stream on all three.
func TestThreeServersFormAJetStreamCluster(t *testing.T) {
	urls := startCluster(t, 3)
	st := natsstoretest.OpenCluster(t, urls, 3, 30*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 3)
}

// streamReplicas is the configured replicas of each of the store's
// streams, by name.
func streamReplicas(t *testing.T, st *natsstore.Store) map[string]int {
	t.Helper()
	// By name: a cluster's stream listing leaves out streams whose
	// leader did not answer in time (a listing during a change).
	out := map[string]int{}
	for _, name := range []string{tenant.AuditStream, tenant.WorkStream, tenant.KVStream(tenant.IntentsBucket), tenant.KVStream(tenant.IdempotencyBucket),
		tenant.KVStream(tenant.PrincipalsBucket), tenant.KVStream(tenant.ControlBucket), tenant.KVStream(tenant.ApprovalsBucket),
		tenant.KVStream(tenant.PoliciesBucket), tenant.KVStream(tenant.CheckpointsBucket), tenant.KVStream(tenant.HealthBucket)} {
		s, err := st.JS.Stream(context.Background(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = s.CachedInfo().Config.Replicas
	}
	return out
}

// requireReplicas fails unless every stream of the store is configured
// with n replicas and, within a few seconds (the cluster adds and removes
// peers after a change), placed: a leader and n-1 peers.
func requireReplicas(t *testing.T, st *natsstore.Store, n int, when string) {
	t.Helper()
	for name, got := range streamReplicas(t, st) {
		if got != n {
			t.Fatalf("%s: stream %s has %d replicas, want %d", when, name, got, n)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			info, err := st.JS.Stream(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			if c := info.CachedInfo().Cluster; c != nil && c.Leader != "" && len(c.Replicas) == n-1 || time.Now().After(deadline) {
				break
			}
		}
		natsstoretest.RequirePlaced(t, st, name, n)
	}
}

// TestReplicasAreChosenRaisedAndNeverLowered, on a three-server cluster:
// with no number asked and the three servers listed, Open creates every
// stream at R3 and says so; five replicas cannot be placed and Open says
// why; a stream an operator scaled down keeps its replicas when none is
// asked, and an asked number raises it; asking for fewer, or opening
// through one server, never lowers it.
func TestReplicasAreChosenRaisedAndNeverLowered(t *testing.T) {
	urls := startCluster(t, 3)
	all := strings.Join(urls, ",")
	ctx := context.Background()
	var logged bytes.Buffer
	var first *natsstore.Store
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		var err error
		first, err = natsstore.Open(ctx, natsstore.Config{NATSURL: all, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no store on the cluster after 30s: %v", err)
		}
	}
	t.Cleanup(func() { first.Close() })
	requireReplicas(t, first, 3, "chosen for a cluster of three")
	if !strings.Contains(logged.String(), "replicas=3") {
		t.Fatalf("the log does not say 3 replicas were chosen: %q", logged.String())
	}

	open := func(cfg natsstore.Config) *natsstore.Store {
		t.Helper()
		st, err := natsstore.Open(ctx, cfg)
		if err != nil {
			t.Fatalf("open %+v: %v", cfg, err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}

	_, err := natsstore.Open(ctx, natsstore.Config{NATSURL: all, Replicas: 5})
	if err == nil || !strings.Contains(err.Error(), "cannot place 5 replicas") {
		t.Fatalf("open at R5 on three servers: %v, want a refusal saying the cluster cannot place 5 replicas", err)
	}
	requireReplicas(t, first, 3, "after the refused R5")

	// An operator scales every stream down to one replica.
	for name := range streamReplicas(t, first) {
		s, err := first.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.Replicas = 1
		if _, err := first.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("scale %s down: %v", name, err)
		}
	}
	open(natsstore.Config{NATSURL: all})
	open(natsstore.Config{NATSURL: all, Replicas: 1})
	requireReplicas(t, first, 1, "opened with no number and with 1 after the operator chose 1")

	open(natsstore.Config{NATSURL: all, Replicas: 3})
	requireReplicas(t, first, 3, "opened with 3")
	open(natsstore.Config{NATSURL: all, Replicas: 1})
	for _, u := range urls {
		open(natsstore.Config{NATSURL: u})
	}
	requireReplicas(t, first, 3, "opened with 1, and with no number through each server")
}

// TestReplicasOnASingleServer: a single server (not a cluster) cannot hold
// three replicas, and Open says so instead of the server's bare error;
// the embedded server refuses before starting.
func TestReplicasOnASingleServer(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	_, err = natsstore.Open(context.Background(), natsstore.Config{NATSURL: srv.ClientURL(), Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "not a cluster and cannot hold 3 replicas") {
		t.Fatalf("R3 on one server: %v, want a refusal saying it is not a cluster", err)
	}
	for _, n := range []int{3, 2, -1} {
		if _, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir(), Replicas: n}); err == nil {
			t.Fatalf("embedded store at replicas %d: opened, want a refusal", n)
		}
	}
}

// TestScansThroughEveryServer: on a three-server cluster, the audit
// stream's readers (Read, Last, Subjects) and the buckets' (Get, Keys,
// Watch, LastRevision) work through a connection to each server, whether
// the stream is hosted by one server only (R1: two of the three
// connections reach it through the cluster) or by all three (R3); and no
// scan leaves a consumer on the audit stream, also one cut short by fn's
// error or by its context.
func TestScansThroughEveryServer(t *testing.T) {
	urls := startCluster(t, 3)
	st := natsstoretest.OpenCluster(t, urls, 1, 30*time.Second)
	natsstoretest.RequirePlaced(t, st, tenant.AuditStream, 1)
	ctx := context.Background()

	// Records: chain a takes three fetches of a batch (512).
	a, b := tenant.AuditSubject(tenant.MustParse("scan-a")), tenant.AuditSubject(tenant.MustParse("scan-b"))
	want := map[string][]string{}
	for subject, n := range map[string]int{a: 1100, b: 3} {
		var last uint64
		for i := range n {
			d := fmt.Sprintf("%s-%d", subject, i)
			seq, _, err := st.Audit.Publish(ctx, subject, []byte(d), d, last)
			if err != nil {
				t.Fatal(err)
			}
			last, want[subject] = seq, append(want[subject], d)
		}
	}
	if _, err := st.Control.Put(ctx, "scan-key", []byte("on"), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	// One store per server, each connected to that server only.
	through := make([]*natsstore.Store, len(urls))
	for i, u := range urls {
		through[i] = natsstoretest.OpenCluster(t, []string{u}, 1, 30*time.Second)
		if got, want := through[i].NC.ConnectedServerName(), fmt.Sprintf("n%d", i+1); got != want {
			t.Fatalf("store on %s is connected to %s, want %s", u, got, want)
		}
	}

	scans := func(t *testing.T) {
		for i, s := range through {
			t.Run(fmt.Sprintf("through n%d", i+1), func(t *testing.T) {
				// Scans repeated: a server that does not host the stream
				// hears of each new consumer a moment after the client
				// does (Read).
				for _, subject := range []string{a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, b} {
					if _, got := read(t, s.Audit, subject); !slices.Equal(got, want[subject]) {
						t.Fatalf("Read(%s) delivered %d records, want %d in order", subject, len(got), len(want[subject]))
					}
					natsstoretest.RequireNoConsumers(t, s, tenant.AuditStream, "Read("+subject+")")
				}
				if data, _, err := s.Audit.Last(ctx, a); err != nil || string(data) != want[a][len(want[a])-1] {
					t.Fatalf("Last(%s) = %q, %v", a, data, err)
				}
				if got, err := s.Audit.Subjects(ctx, tenant.AuditSubjects); err != nil || !slices.Equal(got, []string{a, b}) {
					t.Fatalf("Subjects = %v, %v; want %v", got, err, []string{a, b})
				}

				// Cut short by fn's error, and by the context.
				stop := errors.New("stop")
				n := 0
				if err := s.Audit.Read(ctx, a, 0, func(uint64, []byte) error { n++; return stop }); err != stop || n != 1 { //nolint:errorlint // returned as it is
					t.Fatalf("Read with fn failing = %v after %d calls; want fn's error after 1", err, n)
				}
				natsstoretest.RequireNoConsumers(t, s, tenant.AuditStream, "a Read that fn's error ended")
				cctx, cancel := context.WithCancel(ctx)
				n = 0
				err := s.Audit.Read(cctx, a, 0, func(uint64, []byte) error {
					if n++; n == 10 {
						cancel()
					}
					return nil
				})
				cancel()
				if !errors.Is(err, context.Canceled) || n == len(want[a]) {
					t.Fatalf("Read cancelled after 10 records = %v after %d calls; want context.Canceled before the end", err, n)
				}
				natsstoretest.RequireNoConsumers(t, s, tenant.AuditStream, "a Read that its context's cancellation ended")

				if e, err := s.Control.Get(ctx, "scan-key"); err != nil || string(e.Value) != "on" {
					t.Fatalf("Get = %q, %v", e.Value, err)
				}
				if keys, err := s.Control.Keys(ctx, ""); err != nil || !slices.Contains(keys, "scan-key") {
					t.Fatalf("Keys = %v, %v", keys, err)
				}
				if _, err := s.Control.LastRevision(ctx); err != nil {
					t.Fatalf("LastRevision: %v", err)
				}
				wctx, stopWatch := context.WithCancel(ctx)
				defer stopWatch()
				ch, err := s.Control.Watch(wctx)
				if err != nil {
					t.Fatalf("Watch: %v", err)
				}
				for c := range ch {
					if c.CaughtUp {
						break
					}
				}
			})
		}
	}
	t.Run("R1", scans)

	// The operator scales the audit stream to R3 (Open keeps the replicas
	// it finds).
	info, err := st.Audit.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.Replicas = 3
	if _, err := st.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitPlaced(t, st, tenant.AuditStream, 3)
	t.Run("R3", scans)
}

// waitPlaced waits (at most 30 s) until stream is placed at replicas with
// every peer current.
func waitPlaced(t *testing.T, st *natsstore.Store, stream string, replicas int) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, err := st.JS.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		current := 0
		if info.Cluster != nil && info.Cluster.Leader != "" {
			for _, p := range info.Cluster.Replicas {
				if p.Current {
					current++
				}
			}
		}
		if current == replicas-1 {
			natsstoretest.RequirePlaced(t, st, stream, replicas)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not placed at R%d within 30s: %+v", stream, replicas, info.Cluster)
		}
	}
}
