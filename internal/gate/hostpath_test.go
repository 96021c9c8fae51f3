package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/executor"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// TestStoredResultsNameNoHostPath: fs executions that fail (a directory, a
// missing file, a FIFO, a hard link to a file outside the sandbox, a path
// under a file, a sandbox that is not a directory) are recorded with an
// error that names the sandbox-relative target: neither the result the gate
// returns and stores nor any audit record holds the host path of the
// sandbox (relative to the working directory, or absolute), and the content of the hard-linked outside
// file appears nowhere.
func TestStoredResultsNameNoHostPath(t *testing.T) {
	// The sandbox dir relative to the working directory, as serve
	// --data-dir ./data makes it: its host paths are relative too.
	base := t.TempDir()
	t.Chdir(base)
	const sandbox = "host-sandbox"
	dir := filepath.Join(sandbox, "acme")
	secret := "outside.txt"
	const secretText = "outside-secret-4711"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "adir"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "f.txt"), []byte("x"), 0o640))
	must(os.WriteFile(secret, []byte(secretText), 0o640))
	must(os.Link(secret, filepath.Join(dir, "hl.txt")))
	must(syscall.Mkfifo(filepath.Join(dir, "p"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "locked.txt"), []byte("x"), 0))
	execs, err := executor.New(executor.Config{SandboxDir: sandbox})
	must(err)
	n := openNode(t, t.TempDir(), execs)
	ctx := context.Background()

	tests := []struct {
		name string
		req  contract.IntentRequest
		want string // in the recorded error
	}{
		{"read a directory", contract.IntentRequest{Action: "fs.read", Target: "adir"}, `fs.read "adir": `},
		{"read a missing file", contract.IntentRequest{Action: "fs.read", Target: "missing.txt"}, `fs.read "missing.txt": `},
		{"read a fifo", contract.IntentRequest{Action: "fs.read", Target: "p"}, "not a regular file"},
		{"read a hard link to a file outside", contract.IntentRequest{Action: "fs.read", Target: "hl.txt"}, "more than one hard link"},
		{"read under a file", contract.IntentRequest{Action: "fs.read", Target: "f.txt/x"}, `fs.read "f.txt/x": `},
		{"read a file without permission", contract.IntentRequest{Action: "fs.read", Target: "locked.txt"}, `fs.read "locked.txt": `},
		{"write onto a directory", contract.IntentRequest{Action: "fs.write", Target: "adir", Params: map[string]string{"content": "x"}}, `fs.write "adir": `},
		{"write under a file", contract.IntentRequest{Action: "fs.write", Target: "f.txt/x", Params: map[string]string{"content": "x"}}, `fs.write "f.txt/x": `},
		{"delete a directory", contract.IntentRequest{Action: "fs.delete", Target: "adir"}, `fs.delete "adir": `},
		{"delete a missing file", contract.IntentRequest{Action: "fs.delete", Target: "missing.txt"}, `fs.delete "missing.txt": `},
		{"write onto a fifo", contract.IntentRequest{Action: "fs.write", Target: "p", Params: map[string]string{"content": "x"}}, `fs.write "p": not a regular file`},
		{"write onto a hard link to a file outside", contract.IntentRequest{Action: "fs.write", Target: "hl.txt", Params: map[string]string{"content": "x"}}, `fs.write "hl.txt": file has more than one hard link`},
		{"delete a fifo", contract.IntentRequest{Action: "fs.delete", Target: "p"}, `fs.delete "p": not a regular file`},
		{"delete a hard link to a file outside", contract.IntentRequest{Action: "fs.delete", Target: "hl.txt"}, `fs.delete "hl.txt": file has more than one hard link`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.Target == "locked.txt" && os.Geteuid() == 0 {
				t.Log("running as root: a mode 000 file is readable, so this read succeeds; its result is still checked for host paths")
			}
			tt.req.IdempotencyKey = "k" + string(rune('a'+i))
			v, _, err := n.gate.Propose(ctx, acme, agent, tt.req, gate.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			if v.Intent.Class != contract.A0 {
				approve(t, n, v.Intent.ID)
			}
			if v.Intent.Class == contract.A3 {
				must(vote(n, operator2, v.Intent.ID, "approve"))
			}
			out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			stored, err := n.gate.Get(ctx, acme, v.Intent.ID)
			if err != nil || stored.Result == nil {
				t.Fatalf("Get = %+v, %v", stored, err)
			}
			for _, res := range []contract.ExecutionResult{out.Result, *stored.Result} {
				b, _ := json.Marshal(res)
				if strings.Contains(string(b), base) || strings.Contains(string(b), sandbox) || strings.Contains(string(b), secretText) {
					t.Fatalf("result carries a host path or the outside content: %s", b)
				}
				if !(tt.req.Target == "locked.txt" && os.Geteuid() == 0) && (res.Status != contract.StatusFailed || !strings.Contains(res.Error, tt.want)) {
					t.Fatalf("result %s, want failed with %q", b, tt.want)
				}
			}
			t.Log(out.Result.Error)
		})
	}
	// A sandbox root that is not a directory (os.OpenRoot names its host path).
	must(os.RemoveAll(dir))
	must(os.WriteFile(dir, []byte("not a dir"), 0o640))
	v, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "fs.read", Target: "f.txt", IdempotencyKey: "root"}, gate.Meta{})
	must(err)
	out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil || out.Result.Status != contract.StatusFailed || strings.Contains(out.Result.Error, base) || strings.Contains(out.Result.Error, sandbox) {
		t.Fatalf("read from a sandbox that is a file = %+v, %v", out.Result, err)
	}
	t.Log(out.Result.Error)

	var records int
	must(n.log.Scan(ctx, acme, 0, 0, func(raw []byte, _ contract.AuditRecord) error {
		records++
		if bytes.Contains(raw, []byte(base)) || bytes.Contains(raw, []byte(sandbox)) || bytes.Contains(raw, []byte(secretText)) {
			t.Errorf("audit record carries a host path or the outside content: %s", raw)
		}
		return nil
	}))
	if records == 0 {
		t.Fatal("no audit records")
	}
}
