// Structure tests: the design's rules that the compiler cannot check.
package exoarmur_test

import (
	"bytes"
	"context"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/app"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

const module = "github.com/exoarmur/exoarmur"

type goPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T, patterns ...string) []goPackage {
	t.Helper()
	args := append([]string{"list", "-json=ImportPath,Dir,GoFiles,Imports,Deps"}, patterns...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportRules: only the wiring (internal/app) imports the executors, so
// no other code can reach a side effect except through the gate's Permit;
// replay and the gate can never reach an executor, even transitively.
func TestImportRules(t *testing.T) {
	const executor = module + "/internal/executor"
	allowed := []string{module + "/internal/app", executor}
	for _, p := range listPackages(t, "./...") {
		if slices.Contains(p.Imports, executor) && !slices.Contains(allowed, p.ImportPath) {
			t.Errorf("%s imports %s; only internal/app may wire executors", p.ImportPath, executor)
		}
		for _, pure := range []string{"/internal/replay", "/internal/gate", "/internal/audit", "/internal/policy", "/internal/contract", "/internal/action"} {
			if p.ImportPath == module+pure && slices.Contains(p.Deps, executor) {
				t.Errorf("%s depends on %s (replay and the decision path must not reach an executor)", p.ImportPath, executor)
			}
		}
	}
}

// TestJetStreamImporters: the store adapter (internal/natsstore) is the one
// package that imports NATS: JetStream, the core client, the server (any
// github.com/nats-io package). The domain packages declare what they need
// of the store where they use it (kv.Bucket; audit.Stream;
// killswitch.Bucket and killswitch.Peers; gate.WorkQueue) and hold the
// adapter's implementations; the wiring, the CLI (`exoarmur nats` too) and
// the evidence tools reach NATS only through natsstore. A new importer
// fails here, with a sharper word for the domain packages listed in none.
// Test files may import NATS (to inspect what the adapter stored).
func TestJetStreamImporters(t *testing.T) {
	const nats = "github.com/nats-io/"
	allowed := map[string]string{
		module + "/internal/natsstore": "the store adapter",
	}
	none := []string{module + "/internal/auth", module + "/internal/approval", module + "/internal/kv", module + "/internal/audit",
		module + "/internal/killswitch", module + "/internal/gate"}
	for _, p := range listPackages(t, "./...") {
		if _, ok := allowed[p.ImportPath]; ok {
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case !strings.HasPrefix(imp, nats):
			case slices.Contains(none, p.ImportPath):
				t.Errorf("%s imports %s; it reaches the store only through interfaces it declares, which the store adapter (internal/natsstore) implements, and must import no NATS", p.ImportPath, imp)
			default:
				t.Errorf("%s imports %s; only the store adapter (internal/natsstore) may import NATS", p.ImportPath, imp)
			}
		}
	}
}

// TestAccessIsTransportFree: the one access decision knows no transport, so
// every front end (REST, MCP, console, CLI) can call it.
func TestAccessIsTransportFree(t *testing.T) {
	for _, p := range listPackages(t, "./internal/access") {
		for _, banned := range []string{"net/http", "net/http/httptest"} {
			if slices.Contains(p.Imports, banned) {
				t.Errorf("%s imports %s; the access layer must stay transport-free", p.ImportPath, banned)
			}
		}
	}
}

// forbidSource fails for every non-test source file outside the package
// ending in exempt that contains one of needles, saying why.
func forbidSource(t *testing.T, exempt string, needles []string, why string) {
	t.Helper()
	for _, p := range listPackages(t, "./...") {
		if strings.HasSuffix(p.ImportPath, exempt) {
			continue
		}
		for _, f := range p.GoFiles {
			src, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, needle := range needles {
				if strings.Contains(string(src), needle) {
					t.Errorf("%s/%s contains %s: %s", p.ImportPath, f, needle, why)
				}
			}
		}
	}
}

// TestOnlyTheGateMintsPermits: a Permit's fields are unexported, so only
// package gate can fill one; outside it no non-test code may even build a
// zero one (executors refuse it, but none should be made).
func TestOnlyTheGateMintsPermits(t *testing.T) {
	forbidSource(t, "/internal/gate", []string{"gate.Permit{", "new(gate.Permit)"}, "only the gate mints permits")
}

// TestOnlyTheRegistryNamesActionTypes: the action types are declared once,
// in internal/action (builtin.go). No other non-test source spells a
// registered type's name as a string literal, so there is no second list,
// map or switch of them that adding a type could miss; code that names a
// type uses the registry's constants (action.FSRead, ...).
func TestOnlyTheRegistryNamesActionTypes(t *testing.T) {
	var needles []string
	for _, r := range action.Builtin().List() {
		needles = append(needles, strconv.Quote(r.Type))
	}
	forbidSource(t, "/internal/action", needles, "action types are declared and named in internal/action")
}

// TestOnePackageComment: every package has exactly one package comment.
func TestOnePackageComment(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if len(p.GoFiles) == 0 {
			continue
		}
		n := 0
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if doc := af.Doc; doc != nil && (strings.HasPrefix(doc.Text(), "Package ") || af.Name.Name == "main" && strings.HasPrefix(doc.Text(), "Command ")) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s has %d package comments, want exactly 1", p.ImportPath, n)
		}
	}
}

// TestNoSubjectOrKeyOutsideNaming: NATS subjects and KV keys are built only
// in internal/tenant; a string literal that looks like one elsewhere fails.
func TestNoSubjectOrKeyOutsideNaming(t *testing.T) {
	needles := []string{`"exoarmur.v1.`, `"KV_`}
	for _, name := range []string{tenant.IntentsBucket, tenant.IdempotencyBucket, tenant.PrincipalsBucket, tenant.ControlBucket,
		tenant.ApprovalsBucket, tenant.AuditStream, tenant.WorkStream, tenant.WorkConsumer} {
		needles = append(needles, `"`+name+`"`)
	}
	forbidSource(t, "/internal/tenant", needles, "build names in internal/tenant")
}

// TestProductionBinaryHasNoEvidenceMachinery: fixed clocks, seeded keys, the
// reality orchestration and the load harness live in cmd/exoarmur-lab; the
// production binary neither links the test HTTP server nor the HDR
// histogram, and its serve and keys create offer no evidence flags.
func TestProductionBinaryHasNoEvidenceMachinery(t *testing.T) {
	pkgs := listPackages(t, "./cmd/exoarmur")
	if len(pkgs) != 1 {
		t.Fatalf("go list ./cmd/exoarmur: %d packages", len(pkgs))
	}
	for _, banned := range []string{"net/http/httptest", "github.com/HdrHistogram/hdrhistogram-go",
		module + "/internal/lab", module + "/internal/reality", module + "/internal/bench"} {
		if slices.Contains(pkgs[0].Deps, banned) {
			t.Errorf("cmd/exoarmur depends on %s; evidence and load tools belong in cmd/exoarmur-lab", banned)
		}
	}
	for _, args := range [][]string{{"serve", "-h"}, {"keys", "create", "-h"}, {"check-config", "-h"}, {"-h"}} {
		var out, errOut bytes.Buffer
		if code := app.Main(context.Background(), args, app.Env{Stdout: &out, Stderr: &errOut}); code != 0 {
			t.Fatalf("exoarmur %s: exit %d\n%s", strings.Join(args, " "), code, errOut.String())
		}
		help := out.String() + errOut.String()
		if !strings.Contains(help, "-") {
			t.Fatalf("exoarmur %s printed no help", strings.Join(args, " "))
		}
		for _, banned := range []string{"evidence", "seed", "reality", "bench"} {
			if strings.Contains(strings.ToLower(help), banned) {
				t.Errorf("exoarmur %s mentions %q:\n%s", strings.Join(args, " "), banned, help)
			}
		}
	}
}
