package gate_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/executor"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// lookups records the executor the gate is given for each action type.
type lookups struct {
	gate.Executors
	mu  sync.Mutex
	got map[string]gate.Executor
}

func (l *lookups) Lookup(typ string) (gate.Executor, bool) {
	e, ok := l.Executors.Lookup(typ)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got[typ] = e
	return e, ok
}

// TestTheRegisteredExecutorRuns: an action type added to the registry (one
// registration, on an existing executor kind and effect) is proposed with
// its registered class, decided by its effect's policy and run by the
// executor internal/executor bound to its registration; a gate on the
// built-in registry does not know it.
func TestTheRegisteredExecutorRuns(t *testing.T) {
	notes := action.Registration{Type: "notes.read", Class: contract.A0, ReadOnly: true,
		Description: "a note in the tenant sandbox", Effect: policy.FS, Executor: action.Executor{Kind: action.SandboxRead}}
	actions, err := action.New(append(action.Builtin().List(), notes)...)
	if err != nil {
		t.Fatal(err)
	}
	sandbox := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sandbox, "acme", "notes"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sandbox, "acme", "notes", "n.txt"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	execs, err := executor.New(executor.Config{Actions: actions, SandboxDir: sandbox})
	if err != nil {
		t.Fatal(err)
	}
	seen := &lookups{Executors: execs, got: map[string]gate.Executor{}}
	n := openNodeWith(t, t.TempDir(), seen, actions)
	ctx := context.Background()

	v, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "notes.read", Target: "notes/n.txt", IdempotencyKey: "n1"}, gate.Meta{})
	if err != nil || v.Intent.Class != contract.A0 || v.Preview.Verdict != contract.Allow {
		t.Fatalf("Propose = %+v, %v", v, err)
	}
	out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil || out.Result.Status != contract.StatusSucceeded || out.Result.Output["content"] != "hello" {
		t.Fatalf("Execute = %+v, %v", out, err)
	}
	want, _ := execs.Lookup("notes.read")
	if got := seen.got["notes.read"]; got == nil || got != want {
		t.Fatalf("the gate ran %#v, the registry's executor is %#v", got, want)
	}

	// Its effect's policy: a path out of the sandbox is blocked.
	esc, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "notes.read", Target: "../n.txt", IdempotencyKey: "n2"}, gate.Meta{})
	if err != nil || esc.Preview.Verdict != contract.Deny {
		t.Fatalf("Propose escape = %+v, %v", esc.Preview, err)
	}

	builtin := openNode(t, t.TempDir(), execs)
	if _, _, err := builtin.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "notes.read", Target: "notes/n.txt", IdempotencyKey: "n1"}, gate.Meta{}); contract.ErrorCode(err) != contract.CodeUnknownAction {
		t.Fatalf("a gate on the built-ins proposed notes.read: %v", err)
	}
}
