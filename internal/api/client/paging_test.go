package client_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// TestPaging: the approval queue and the key list come a bounded page at
// a time, each but the last with a next cursor; the pages together hold
// every item once, in order; a bad limit or cursor is a 400
// invalid_request; the list calls follow the pages.
func TestPaging(t *testing.T) {
	srv := clienttest.Start(t)
	agent, op, admin := as(t, srv, clienttest.Agent), as(t, srv, clienttest.Operator), as(t, srv, clienttest.Admin)
	var want []string
	for i := range 7 {
		v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: fmt.Sprintf("p%d.txt", i), Params: map[string]string{"content": "x"}, IdempotencyKey: fmt.Sprintf("p%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, v.Intent.ID)
	}
	for i := range 6 {
		if _, err := admin.CreateKey(ctx, client.KeyRequest{Name: fmt.Sprintf("bot%d", i), Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"fs.read"}}); err != nil {
			t.Fatal(err)
		}
	}
	approvals := func(q client.PageQuery) ([]string, string, error) {
		p, err := op.ApprovalsPage(ctx, "acme", approval.StatusPending, q)
		var ids []string
		for _, it := range p.Approvals {
			ids = append(ids, it.Intent.ID)
		}
		return ids, p.Next, err
	}
	keys := func(q client.PageQuery) ([]string, string, error) {
		p, err := admin.KeysPage(ctx, q)
		var ids []string
		for _, k := range p.Keys {
			ids = append(ids, k.ID)
		}
		return ids, p.Next, err
	}
	all, err := admin.ListKeys(ctx)
	if err != nil || len(all) != 12 {
		t.Fatalf("ListKeys = %d keys, %v; want 12", len(all), err)
	}
	var wantKeys []string
	for _, k := range all {
		wantKeys = append(wantKeys, k.ID)
	}
	if !slices.IsSorted(wantKeys) {
		t.Fatalf("keys not in ID order: %v", wantKeys)
	}
	for _, tc := range []struct {
		name  string
		page  func(client.PageQuery) ([]string, string, error)
		want  []string
		limit int
		sizes []int // the pages' lengths
	}{
		{"approvals by 3", approvals, want, 3, []int{3, 3, 1}},
		{"approvals by 7", approvals, want, 7, []int{7}},
		{"approvals by 1000", approvals, want, 1000, []int{7}},
		{"keys by 5", keys, wantKeys, 5, []int{5, 5, 2}},
		{"keys by 4", keys, wantKeys, 4, []int{4, 4, 4}},
		{"keys by default", keys, wantKeys, 0, []int{12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			var sizes []int
			cursor := ""
			for range 10 {
				ids, next, err := tc.page(client.PageQuery{Limit: tc.limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				got, sizes = append(got, ids...), append(sizes, len(ids))
				if next == "" {
					break
				}
				cursor = next
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(sizes, tc.sizes) {
				t.Fatalf("pages of %d: %v (sizes %v); want %v (sizes %v)", tc.limit, got, sizes, tc.want, tc.sizes)
			}
		})
	}
	list, err := op.ListApprovals(ctx, "acme", approval.StatusPending)
	if err != nil || len(list) != 7 {
		t.Fatalf("ListApprovals = %d, %v", len(list), err)
	}
	// A cursor of one list is no cursor of the other.
	_, keyCursor, err := keys(client.PageQuery{Limit: 1})
	if err != nil || keyCursor == "" {
		t.Fatalf("keys page of 1: next %q, %v", keyCursor, err)
	}
	_, apprCursor, err := approvals(client.PageQuery{Limit: 1})
	if err != nil || apprCursor == "" {
		t.Fatalf("approvals page of 1: next %q, %v", apprCursor, err)
	}
	for _, tc := range []struct {
		name string
		page func(client.PageQuery) ([]string, string, error)
		q    client.PageQuery
	}{
		{"approvals limit over 1000", approvals, client.PageQuery{Limit: 1001}},
		{"approvals negative limit", approvals, client.PageQuery{Limit: -1}},
		{"approvals garbage cursor", approvals, client.PageQuery{Cursor: "%%%"}},
		{"approvals base64 non-cursor", approvals, client.PageQuery{Cursor: "e30"}}, // {}
		{"approvals with a keys cursor", approvals, client.PageQuery{Cursor: keyCursor}},
		{"keys limit over 1000", keys, client.PageQuery{Limit: 5000}},
		{"keys garbage cursor", keys, client.PageQuery{Cursor: "not-a-cursor"}},
		{"keys with an approvals cursor", keys, client.PageQuery{Cursor: apprCursor}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.page(tc.q)
			apiErr(t, err, 400, contract.CodeInvalid)
		})
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=1&limit=2"} {
		v, _ := url.ParseQuery(q)
		r := rawGet(t, srv.URL+"/v1/keys?"+v.Encode(), srv.Keys[clienttest.Admin])
		if r != 400 {
			t.Fatalf("GET /v1/keys?%s = HTTP %d, want 400", q, r)
		}
	}
}

// rawGet answers the status of a GET with key, for queries the client
// would not send.
func rawGet(t *testing.T, target, key string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestExportTrailer: an export whose server declared the record-count
// trailer is complete only with the count of the records that arrived;
// a clean end without it (a cut at a record boundary that an HTTP/1.0
// hop or a proxy made look like the end) is an error.
func TestExportTrailer(t *testing.T) {
	for _, tc := range []struct {
		name, trailer string
		ok            bool
	}{{"count matches", "2", true}, {"no count", "", false}, {"count larger", "3", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", contract.ExportTrailer)
				w.Write([]byte("{\"seq\":1}\n{\"seq\":2}\n"))
				if tc.trailer != "" {
					w.Header().Set(contract.ExportTrailer, tc.trailer)
				}
			})
			var buf bytes.Buffer
			_, err := c.AuditExport(ctx, "acme", &buf)
			if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "incomplete")) {
				t.Fatalf("export with trailer %q = %v", tc.trailer, err)
			}
		})
	}
}
