package main_test

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

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
