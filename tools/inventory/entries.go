package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/constant"
	"go/types"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/tools/go/packages"

	"github.com/exoarmur/exoarmur/internal/action"
)

// findEntries finds the execution paths: HTTP routes (api.routes), CLI
// commands (app.commands and lab.commands), executors (through the action registry), the replay
// driver (exported functions of internal/replay); goroutines were recorded
// while scanning.
func (a *analyzer) findEntries() {
	for _, p := range a.pkgs {
		switch p.PkgPath {
		case module + "/internal/api":
			a.literalEntries(p, "http", func(call *ast.CallExpr) (string, ast.Expr, bool) {
				id, ok := call.Fun.(*ast.Ident)
				if !ok || id.Name != "r" || len(call.Args) != 4 {
					return "", nil, false
				}
				method, ok1 := stringConst(p, call.Args[0])
				path, ok2 := stringConst(p, call.Args[1])
				return "HTTP " + method + " " + path, call.Args[3], ok1 && ok2
			})
		case module + "/internal/app", module + "/internal/lab":
			prog := map[string]string{module + "/internal/app": "exoarmur ", module + "/internal/lab": "exoarmur-lab "}[p.PkgPath]
			a.compositeEntries(p, "cli", "Command", func(lit *ast.CompositeLit) (string, ast.Expr, bool) {
				if len(lit.Elts) != 3 {
					return "", nil, false
				}
				nameExpr, runExpr := lit.Elts[0], lit.Elts[2] // {name, summary, run}
				for _, e := range lit.Elts {                  // or {Name: ..., Run: ...}
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						switch key, _ := kv.Key.(*ast.Ident); {
						case key != nil && key.Name == "Name":
							nameExpr = kv.Value
						case key != nil && key.Name == "Run":
							runExpr = kv.Value
						}
					}
				}
				name, ok := stringConst(p, nameExpr)
				return prog + name, runExpr, ok
			})
		case executorPkg:
			a.executorEntries(p)
		case module + "/internal/replay":
			a.exportedEntries(p, "replay")
		}
	}
	for i := range a.inv.Entries {
		a.classify(&a.inv.Entries[i])
	}
}

func stringConst(p *packages.Package, e ast.Expr) (string, bool) {
	tv, ok := p.TypesInfo.Types[e]
	if !ok || tv.Value == nil || tv.Value.Kind() != constant.String {
		return "", false
	}
	return constant.StringVal(tv.Value), true
}

// funcOf resolves an expression naming a function or method value. A
// call of a wrapper with one function argument (the API's s.heavy(s.list),
// which only bounds concurrency) resolves to that argument: the handler
// whose effects the route has.
func funcOf(p *packages.Package, e ast.Expr) *types.Func {
	switch e := ast.Unparen(e).(type) {
	case *ast.CallExpr:
		if len(e.Args) == 1 {
			return funcOf(p, e.Args[0])
		}
	case *ast.Ident:
		f, _ := p.TypesInfo.Uses[e].(*types.Func)
		return f
	case *ast.SelectorExpr:
		f, _ := p.TypesInfo.Uses[e.Sel].(*types.Func)
		return f
	}
	return nil
}

func (a *analyzer) addEntry(p *packages.Package, kind, name string, fn ast.Expr) {
	e := Entry{Kind: kind, Name: name, Pos: a.pos(fn.Pos())}
	if f := funcOf(p, fn); f != nil {
		e.Func = f.FullName()
	}
	a.inv.Entries = append(a.inv.Entries, e)
}

func (a *analyzer) literalEntries(p *packages.Package, kind string, match func(*ast.CallExpr) (string, ast.Expr, bool)) {
	for _, f := range p.Syntax {
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if name, fn, ok := match(call); ok {
					a.addEntry(p, kind, name, fn)
				}
			}
			return true
		})
	}
}

func (a *analyzer) compositeEntries(p *packages.Package, kind, typeName string, match func(*ast.CompositeLit) (string, ast.Expr, bool)) {
	for _, f := range p.Syntax {
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			if named, ok := p.TypesInfo.Types[lit].Type.(*types.Named); ok && named.Obj().Name() == typeName {
				if name, fn, ok := match(lit); ok {
					a.addEntry(p, kind, name, fn)
				}
			}
			return true
		})
	}
}

// executorEntries finds the executors through the action registry: each
// registration of action.Builtin names an executor kind, and the executor
// package's map of implementations (kind: implementingType{}) gives the
// kind's Run. A registration whose kind has no implementation there is a
// violation.
func (a *analyzer) executorEntries(p *packages.Package) {
	runs := map[action.ExecutorKind]*types.Func{}
	for _, f := range p.Syntax {
		ast.Inspect(f, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			kind, ok := stringConst(p, kv.Key)
			if named, isNamed := p.TypesInfo.TypeOf(kv.Key).(*types.Named); !ok || !isNamed ||
				named.Obj().Pkg() == nil || named.Obj().Pkg().Path() != actionPkg || named.Obj().Name() != "ExecutorKind" {
				return true
			}
			t := p.TypesInfo.TypeOf(kv.Value)
			if t == nil {
				return true
			}
			obj, _, _ := types.LookupFieldOrMethod(t, true, p.Types, "Run")
			if run, ok := obj.(*types.Func); ok {
				runs[action.ExecutorKind(kind)] = run
			}
			return true
		})
	}
	for _, r := range action.Builtin().List() {
		run, ok := runs[r.Executor.Kind]
		if !ok {
			a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("action %s: executor kind %s has no implementation in %s", r.Type, r.Executor.Kind, short(executorPkg)))
			continue
		}
		a.inv.Entries = append(a.inv.Entries, Entry{Kind: "executor", Name: "executor " + r.Type, Func: run.FullName(), Pos: a.pos(run.Pos())})
	}
	// A kind no built-in uses runs the actions an actions file declares
	// (http-template): one entry for the kind.
	used := map[action.ExecutorKind]bool{}
	for _, r := range action.Builtin().List() {
		used[r.Executor.Kind] = true
	}
	for _, k := range action.Kinds() {
		if used[k] {
			continue
		}
		run, ok := runs[k]
		if !ok {
			a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("executor kind %s has no implementation in %s", k, short(executorPkg)))
			continue
		}
		a.inv.Entries = append(a.inv.Entries, Entry{Kind: "executor", Name: "executor kind " + string(k) + " (declared actions)", Func: run.FullName(), Pos: a.pos(run.Pos())})
	}
}

func (a *analyzer) exportedEntries(p *packages.Package, kind string) {
	for _, f := range p.Syntax {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || !fd.Name.IsExported() {
				continue
			}
			obj, _ := p.TypesInfo.Defs[fd.Name].(*types.Func)
			if obj != nil {
				a.inv.Entries = append(a.inv.Entries, Entry{Kind: kind, Name: "replay " + short(obj.FullName()), Func: obj.FullName(), Pos: a.pos(fd.Pos())})
			}
		}
	}
}

// reach returns the functions reachable from start; with barrier set, the
// barrier function is reached but not entered.
func (a *analyzer) reach(start, barrier string) map[string]bool {
	seen := map[string]bool{start: true}
	stack := []string{start}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == barrier {
			continue
		}
		for m := range a.edges[n] {
			if !seen[m] {
				seen[m] = true
				stack = append(stack, m)
			}
		}
	}
	return seen
}

func (a *analyzer) classify(e *Entry) {
	if e.Func == "" {
		e.Class, e.Gate = Unknown, "UNKNOWN"
		a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("%s: entry %s: cannot resolve its function (UNKNOWN is unsafe)", e.Pos, e.Name))
		return
	}
	all := a.reach(e.Func, "")
	cats := map[string]bool{}
	execReach := false
	for n := range all {
		for _, c := range a.sinks[n] {
			cats[c] = true
		}
		execReach = execReach || a.inExec[n]
	}
	for c := range cats {
		e.Effects = append(e.Effects, c)
	}
	slices.Sort(e.Effects)
	e.Class = ReadOnly
	if len(cats) > 0 {
		e.Class = Write
	}
	switch {
	case e.Kind == "executor":
		e.Gate = "yes (Run requires a *gate.Permit)"
	case !execReach:
		e.Gate = "n/a (reaches no executor)"
	default:
		e.Gate = "yes (via gate.Execute)"
		for n := range a.reach(e.Func, gateExecute) {
			if a.inExec[n] {
				e.Gate = "NO"
				a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("%s: entry %s reaches executor %s without passing gate.Execute", e.Pos, e.Name, short(n)))
				break
			}
		}
	}
}

// check adds the whole-program rules: replay must reach no side effect
// beyond reading, and every external effect must sit in an executor or
// the operator CLI.
func (a *analyzer) check() {
	for _, e := range a.inv.Entries {
		if e.Kind == "replay" && e.Class != ReadOnly {
			a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("%s: replay entry %s is not read-only: %v", e.Pos, e.Name, e.Effects))
		}
	}
	for _, s := range a.inv.Sites {
		if slices.Contains(external, s.Category) && s.Place != "" &&
			!slices.Contains([]string{executorPkg, module + "/internal/app", module + "/internal/api/client", module + "/internal/natsstore", module + "/internal/approval", module + "/internal/checkpoint", module + "/internal/mcp", module + "/internal/reality", module + "/internal/bench", module + "/internal/lab", module + "/tools/inventory"}, s.Pkg) {
			a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("%s: external effect %s (%s) outside the executors", s.Pos, s.Call, s.Category))
		}
	}
}

// Markdown renders the inventory document.
func (inv *Inventory) Markdown() []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Execution surface\n\n")
	w("Generated by `go run ./tools/inventory` from the Go source (go/packages, go/ast, go/types); do not edit.\n")
	w("`go test ./tools/inventory` fails when this file is stale or when a rule below is broken.\n\n")
	w("How to read it:\n\n")
	w("- **Execution paths** are every way into the code that can run: HTTP routes, CLI commands, executors, goroutines and the replay driver.\n")
	w("  Each is classified by what it can reach on a conservative call graph (direct calls, function references, and every\n")
	w("  implementation of a called interface method): READ-ONLY reaches no side-effect call, WRITE-SIDE-EFFECT reaches at least\n")
	w("  one (the effects column says which), UNKNOWN could not be resolved and counts as unsafe.\n")
	w("- **Gate**: an entry that can reach an executor must pass `(*gate.Gate).Execute` on every path (checked by cutting the graph\n")
	w("  at Execute and confirming no executor is still reachable). Executors themselves refuse to run without a `*gate.Permit`,\n")
	w("  a type with unexported fields that only the gate mints.\n")
	w("- **Side-effect call sites** are every call that writes or sends outside the process: file writes, process execution,\n")
	w("  outbound HTTP and dials, NATS publishes, JetStream publishes, KV writes and stream administration. Each must sit in an\n")
	w("  allowed place; external effects (files, processes, network) only in the executors, the store's own files and the\n")
	w("  operator CLI's requested outputs.\n")
	w("- Calls the standard library makes back into the module are not followed: the HTTP server goroutine of `serve` dispatches\n")
	w("  to the HTTP routes, which are listed as entries of their own; `exoarmur serve` itself reaches them through `api.New`.\n\n")
	w("## Rules\n\n")
	if len(inv.Violations) == 0 {
		w("No violations: every side-effect call sits in an allowed place, every path to an executor passes the gate, and replay is read-only.\n\n")
	} else {
		w("**VIOLATIONS** (each fails the build):\n\n")
		for _, v := range inv.Violations {
			w("- %s\n", v)
		}
		w("\n")
	}
	w("## Execution paths (%d)\n\n", len(inv.Entries))
	w("| kind | path | classification | passes the gate | effects reachable | where |\n|---|---|---|---|---|---|\n")
	for _, e := range inv.Entries {
		effects := strings.Join(e.Effects, ", ")
		if effects == "" {
			effects = "none"
		}
		w("| %s | %s | %s | %s | %s | %s |\n", e.Kind, md(e.Name), e.Class, e.Gate, effects, e.Pos)
	}
	w("\n## Side-effect call sites (%d)\n\n", len(inv.Sites))
	w("| category | call | in | where | allowed place: why |\n|---|---|---|---|---|\n")
	for _, s := range inv.Sites {
		pl := "**NONE: violation**"
		if s.Place != "" {
			pl = s.Place + ": " + s.Reason
		}
		w("| %s | %s | %s | %s | %s |\n", s.Category, md(short(s.Call)), md(s.Func), s.Pos, pl)
	}
	w("\n## Allowed places\n\n")
	var names []string
	for pkg := range allowed {
		names = append(names, pkg)
	}
	slices.Sort(names)
	for _, pkg := range names {
		w("- `%s`: %s (%s)\n", short(pkg), allowed[pkg].name, allowed[pkg].reason)
	}
	w("\nSide-effect calls recognised: %s.\n", strconv.Quote(strings.Join(external, ", "))+" (external) and nats publish, jetstream publish, kv write, jetstream admin, embedded nats server (durable state)")
	return b.Bytes()
}

func md(s string) string { return "`" + strings.ReplaceAll(s, "|", "\\|") + "`" }
