package natsstore_test

import (
	"fmt"
	"net"
	"testing"
	"time"

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
