package app

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// fields is a table line with its column padding collapsed.
func fields(line string) string { return strings.Join(strings.Fields(line), " ") }

// TestTablesByDefaultJSONOnRequest: keys list and audit verify print for a
// person by default (a table; a verdict line with counts) and the machine
// output with --json. (approvals list, approve, deny and the killswitch
// commands: TestApprovalCommands, TestKillSwitchCommand.)
func TestTablesByDefaultJSONOnRequest(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := run("demo", "--keep", dir); code != 0 {
		t.Fatalf("demo: exit %d\n%s", code, stderr)
	}
	data := filepath.Join(dir, "data")

	code, out, stderr := run("keys", "list", "--data-dir", data)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) < 3 || fields(lines[0]) != "ID NAME ROLE TENANTS ACTIONS CREATED EXPIRES/STATE" {
		t.Fatalf("keys list: exit %d\n%s%s", code, out, stderr)
	}
	col := strings.Index(lines[0], "NAME")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "key_") || l[col-2:col] != "  " || l[col] == ' ' {
			t.Errorf("keys list row not aligned under NAME:\n%s", out)
		}
	}
	code, out, _ = run("keys", "list", "--data-dir", data, "--json")
	var keys struct {
		Keys []auth.Principal `json:"keys"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &keys) != nil || len(keys.Keys) != len(lines)-1 || keys.Keys[0].ID == "" {
		t.Fatalf("keys list --json: exit %d\n%s", code, out)
	}

	code, out, stderr = run("audit", "verify", "--data-dir", data, "--tenant", "acme")
	var rep contract.ReplayReport
	if c, js, _ := run("audit", "verify", "--data-dir", data, "--tenant", "acme", "--json"); c != 0 || json.Unmarshal([]byte(js), &rep) != nil || !rep.Pass {
		t.Fatalf("audit verify --json: exit %d\n%s", c, js)
	}
	want := "audit chain of acme verifies: 31 records, 16 decisions recomputed, 16 matched, 0 mismatches, head 31:" + rep.Tenants[0].HeadHash + "\n"
	if code != 0 || out != want || rep.Records != 31 || rep.Decisions != 16 {
		t.Fatalf("audit verify: exit %d\n%s%s\nwant %s", code, out, stderr, want)
	}

	// A chain that does not verify: the verdict, then each mismatch.
	var b bytes.Buffer
	printVerdict(Env{Stdout: &b}, tenant.MustParse("acme"), contract.ReplayReport{Records: 3, Decisions: 1,
		Tenants:    []contract.ReplayTenant{{Tenant: "acme", HeadSeq: 3, HeadHash: "ab"}},
		Mismatches: []contract.ReplayMismatch{{Tenant: "acme", Seq: 2, Kind: "intent.proposed", Reason: "hash\nforged"}}})
	if b.String() != "audit chain of acme DOES NOT VERIFY: 3 records, 1 decisions recomputed, 0 matched, 1 mismatches, head 3:ab\n"+
		"  MISMATCH seq=2 kind=intent.proposed: \"hash\\nforged\"\n" {
		t.Fatalf("verdict of a broken chain:\n%s", b.String())
	}
}
