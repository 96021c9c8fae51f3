package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// pagedApprovals serves GET /v1/tenants/acme/approvals as pages of size
// items, n in all; fail, if not 0, is the page answered with a 503.
func pagedApprovals(t *testing.T, n, size, fail int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/tenants/acme/approvals" {
			http.NotFound(w, r)
			return
		}
		page := 0
		if c := r.URL.Query().Get("cursor"); c != "" {
			fmt.Sscanf(c, "p%d", &page)
		}
		if fail != 0 && page == fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"store_unavailable","message":"cannot read approvals"},"request_id":"req_9"}`))
			return
		}
		body := map[string]any{"tenant": "acme"}
		items := []client.ApprovalItem{}
		for i := page * size; i < min(n, (page+1)*size); i++ {
			id := fmt.Sprintf("in_%032x", i)
			items = append(items, client.ApprovalItem{
				Approval: approval.Record{IntentID: id, Tenant: "acme", Action: "fs.write", Class: "A1", Status: approval.StatusPending, Required: 1, ExpiresAt: time.Unix(0, 0)},
				Intent:   contract.ActionIntent{ID: id, Tenant: "acme", Action: "fs.write", Target: fmt.Sprintf("t%d.txt", i)},
				Lineage:  []approval.Lineage{},
			})
		}
		body["approvals"] = items
		if (page+1)*size < n {
			body["next"] = fmt.Sprintf("p%d", page+1)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestApprovalsListFollowsPages: `approvals list` prints every item of
// every page, as one valid JSON document or one table; a page that fails
// is exit 1 with nothing on stdout (no document that looks complete).
func TestApprovalsListFollowsPages(t *testing.T) {
	srv := pagedApprovals(t, 250, 100, 0)
	code, out, stderr := cli(t, "exo_k", "approvals", "list", "--tenant", "acme", "--json", "--server", srv.URL)
	var doc struct {
		Tenant    string                `json:"tenant"`
		Approvals []client.ApprovalItem `json:"approvals"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Approvals) != 250 {
		t.Fatalf("approvals list --json over 3 pages: exit %d, %d items\n%.300s%s", code, len(doc.Approvals), out, stderr)
	}
	for i, it := range doc.Approvals {
		if it.Intent.ID != fmt.Sprintf("in_%032x", i) {
			t.Fatalf("item %d is %s", i, it.Intent.ID)
		}
	}
	code, out, stderr = cli(t, "exo_k", "approvals", "list", "--tenant", "acme", "--server", srv.URL)
	if lines := strings.Count(out, "\n"); code != 0 || lines != 251 || !strings.Contains(out, "t249.txt") {
		t.Fatalf("approvals list over 3 pages: exit %d, %d lines\n%s", code, lines, stderr)
	}
	failing := pagedApprovals(t, 250, 100, 2)
	for _, args := range [][]string{{"--json"}, {}} {
		code, out, stderr = cli(t, "exo_k", append([]string{"approvals", "list", "--tenant", "acme", "--server", failing.URL}, args...)...)
		if code != 1 || out != "" || !strings.Contains(stderr, "HTTP 503 store_unavailable") {
			t.Fatalf("approvals list %v with page 3 failing: exit %d\nstdout %.200q\nstderr %s", args, code, out, stderr)
		}
	}
}
