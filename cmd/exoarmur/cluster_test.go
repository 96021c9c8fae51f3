package main_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestExoarmurNATSCluster: three `exoarmur nats` processes, each given the
// other two's route URLs, form one JetStream cluster with no other
// software; a store opened on it at R3 places the audit stream on all
// three.
func TestExoarmurNATSCluster(t *testing.T) {
	var clients, routes []string
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
	var urls []string
	for _, c := range clients {
		urls = append(urls, "nats://"+c)
	}
	ctx := context.Background()
	var st *natsstore.Store
	var err error
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err = natsstore.Open(octx, natsstore.Config{NATSURL: strings.Join(urls, ","), Replicas: 3})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no R3 store on the three exoarmur nats processes after 45 s: %v", err)
		}
	}
	defer st.Close()
	s, err := st.JS.Stream(ctx, tenant.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("audit stream: %v replicas %d cluster %+v, want 3 placed", err, info.Config.Replicas, info.Cluster)
	}
	// A member without --cluster-listen cannot take --routes.
	if out, err := exec.Command(binary(t), "nats", "--data-dir", t.TempDir(), "--routes", "nats-route://"+routes[0]).CombinedOutput(); err == nil || !strings.Contains(string(out), "--cluster-listen") {
		t.Fatalf("--routes without --cluster-listen: %v %s", err, out)
	}
}
