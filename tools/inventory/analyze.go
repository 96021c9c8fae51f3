package main

import (
	"cmp"
	"fmt"
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/tools/go/packages"
)

const (
	module      = "github.com/exoarmur/exoarmur"
	gateExecute = "(*" + module + "/internal/gate.Gate).Execute"
	executorPkg = module + "/internal/executor"
	actionPkg   = module + "/internal/action"
)

// Classifications.
const (
	ReadOnly = "READ-ONLY"
	Write    = "WRITE-SIDE-EFFECT"
	Unknown  = "UNKNOWN"
)

// Site is one call that causes a side effect outside the process.
type Site struct {
	Category string // fs write, process exec, http out, network dial, kv write, jetstream publish, ...
	Call     string // the called function
	Func     string // the enclosing function
	Pos      string // file:line
	Pkg      string
	Place    string // the allowed place it sits in ("" = none: a violation)
	Reason   string
}

// Entry is one execution path.
type Entry struct {
	Kind    string // http, cli, executor, goroutine, replay
	Name    string
	Func    string
	Pos     string
	Class   string
	Gate    string // yes (via gate.Execute) / n/a / NO
	Effects []string
}

// Inventory is the analysis result.
type Inventory struct {
	Sites      []Site
	Entries    []Entry
	Violations []string
}

// place is an allowed home for side-effect calls.
type place struct{ name, reason string }

var allowed = map[string]place{
	module + "/internal/executor":   {"executor (gate-guarded)", "runs only with a *gate.Permit, which only the gate mints after a recorded ALLOW and an idempotency claim"},
	module + "/internal/natsstore":  {"store adapter", "the one package that imports NATS (structure_test.go: TestJetStreamImporters), so every JetStream write and NATS publish is here, each on a domain package's call: KV (gate intents and idempotency claims, approvals, the key registry, the kill switches' compare-and-set changes), the audit stream (audit.Log's appends, one message or an atomic batch, and its scans' ephemeral consumers), the work queue (the gate's approved intents, queued once per intent) and the kill switches' propagation acknowledgements (core NATS, not stored); creates the streams and buckets, starts the embedded NATS server, locks the data dir"},
	module + "/internal/approval":   {"approvals", "the operator notification webhook (signed POST to the tenant's configured URL; carries no agent-controlled payload); the approval records are written through the store adapter"},
	module + "/internal/checkpoint": {"audit checkpoints", "the node's own audit key file (created 0600 on first start, rewritten by audit rotate-key) and the checkpoint witness the operator configured (an appended file outside the data dir, or a POST of each signed checkpoint to its URL: a chain head and a signature, no agent-controlled payload); the checkpoints themselves are written through the store adapter"},
	module + "/internal/mcp":        {"MCP upstream connections", "starts the stdio MCP servers the operator configured (serve --mcp-config; a minimal environment: PATH, HOME and the configured variables) and connects to the configured Streamable HTTP ones (through the Go SDK, whose own network calls the inventory does not follow); a tool call (Supervisor.Call) is made only by the executor kind mcp-tool, under the gate's Permit: internal/app hands the Supervisor to the executors and to nothing else"},
	module + "/internal/app":        {"operator CLI", "files the operator asked for (audit export, replay report), the demo's temporary store, and the CLI's own calls to the ExoArmur API (which gates them)"},
	module + "/internal/api/client": {"API client", "the typed client of the ExoArmur API; its calls are gated by the server"},
	module + "/tools/inventory":     {"developer tool", "writes docs/design/00_execution_surface.md"},
	module + "/internal/lab":        {"evidence and load tools", "exoarmur-lab, kept out of the production binary: the production serve and keys create with an evidence clock and seeded keys, and the commands of the load harness and the cold-reviewer run (their files: bench results, the bench profile directory)"},
	module + "/internal/bench":      {"load harness", "exoarmur-lab bench: starts a server process on a temporary data dir, drives it over loopback HTTP; never reaches an executor except through the server's gate"},
	module + "/internal/reality":    {"evidence harness", "the cold-reviewer run: starts, kills and restarts the stack's processes or containers, runs go test, calls the nodes over loopback HTTP, writes the evidence bundle; it goes through the API like any client and never reaches an executor"},
}

// readOnlyOpen reports a call of os.OpenFile or (*os.Root).OpenFile whose
// flags are a constant without a write, create, truncate or append bit: a
// read, not a write. Non-constant flags stay a write.
func readOnlyOpen(info *types.Info, f *types.Func, call *ast.CallExpr) bool {
	if f.Pkg() == nil || f.Pkg().Path() != "os" || f.Name() != "OpenFile" || len(call.Args) < 2 {
		return false
	}
	tv, ok := info.Types[call.Args[1]]
	if !ok || tv.Value == nil || tv.Value.Kind() != constant.Int {
		return false
	}
	flags, exact := constant.Int64Val(tv.Value)
	const writeBits = int64(os.O_WRONLY | os.O_RDWR | os.O_CREATE | os.O_TRUNC | os.O_APPEND)
	return exact && flags&writeBits == 0
}

// sinkCategory classifies a called function as a side effect, or "".
func sinkCategory(f *types.Func) string {
	if f.Pkg() == nil {
		return ""
	}
	recv := ""
	if sig, ok := f.Type().(*types.Signature); ok && sig.Recv() != nil {
		t := sig.Recv().Type()
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		if n, ok := t.(*types.Named); ok {
			recv = n.Obj().Name()
		}
	}
	name := f.Name()
	in := func(names ...string) bool { return slices.Contains(names, name) }
	switch f.Pkg().Path() {
	case "os":
		switch recv {
		case "", "Root":
			if in("WriteFile", "Create", "OpenFile", "Remove", "RemoveAll", "Rename", "Mkdir", "MkdirAll", "MkdirTemp",
				"CreateTemp", "Symlink", "Link", "Chmod", "Chown", "Lchown", "Chtimes", "Truncate") {
				return "fs write"
			}
		case "File":
			if in("Write", "WriteString", "WriteAt", "Truncate") {
				return "fs write"
			}
		}
	case "os/exec":
		if recv == "" && in("Command", "CommandContext") {
			return "process exec"
		}
	case "net/http":
		if (recv == "Client" && in("Do", "Get", "Post", "PostForm", "Head")) || (recv == "" && in("Get", "Post", "PostForm", "Head")) {
			return "http out"
		}
	case "net":
		if (recv == "" && in("Dial", "DialTimeout")) || (recv == "Dialer" && in("Dial", "DialContext")) {
			return "network dial"
		}
	case "github.com/nats-io/nats.go":
		if recv == "Conn" && in("Publish", "PublishMsg", "PublishRequest", "Request", "RequestMsg") {
			return "nats publish"
		}
	case "github.com/nats-io/nats.go/jetstream":
		switch {
		case recv == "KeyValue" && in("Put", "PutString", "Create", "Update", "Delete", "Purge"):
			return "kv write"
		case in("Publish", "PublishMsg", "PublishAsync", "PublishMsgAsync"):
			return "jetstream publish"
		case in("CreateOrUpdateStream", "CreateStream", "UpdateStream", "DeleteStream", "CreateOrUpdateKeyValue",
			"CreateKeyValue", "UpdateKeyValue", "DeleteKeyValue", "DeleteConsumer", "DeleteMsg", "SecureDeleteMsg") || (recv == "Stream" && name == "Purge"):
			return "jetstream admin"
		}
	case "github.com/nats-io/nats-server/v2/server":
		if recv == "Server" && name == "Start" {
			return "embedded nats server"
		}
	}
	return ""
}

// external categories touch the world outside ExoArmur's own durable state.
var external = []string{"fs write", "process exec", "http out", "network dial"}

type analyzer struct {
	root     string
	fset     *token.FileSet
	pkgs     []*packages.Package
	edges    map[string]map[string]bool // caller -> callees (calls and references)
	sinks    map[string][]string        // function -> sink categories it calls directly
	inExec   map[string]bool            // functions of the executor package that call a sink
	methods  map[string][]*types.Func   // method name -> concrete methods in the module
	ifaceUse map[string]*types.Func     // interface method key -> the method
	inv      *Inventory
}

// Analyze loads patterns under root and builds the inventory.
func Analyze(root string, patterns ...string) (*Inventory, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedFiles | packages.NeedSyntax | packages.NeedTypes | packages.NeedTypesInfo,
		Dir:  abs,
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	var errs []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			errs = append(errs, e.Error())
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("load: %s", strings.Join(errs, "; "))
	}
	a := &analyzer{root: abs, fset: cfg.Fset, pkgs: pkgs, edges: map[string]map[string]bool{}, sinks: map[string][]string{},
		inExec: map[string]bool{}, methods: map[string][]*types.Func{}, ifaceUse: map[string]*types.Func{}, inv: &Inventory{}}
	if a.fset == nil {
		a.fset = pkgs[0].Fset
	}
	a.collectMethods()
	for _, p := range pkgs {
		a.scanPackage(p)
	}
	a.expandInterfaces()
	a.findEntries()
	a.check()
	slices.SortFunc(a.inv.Sites, func(x, y Site) int { return cmp.Or(cmp.Compare(x.Pkg, y.Pkg), comparePos(x.Pos, y.Pos)) })
	slices.SortFunc(a.inv.Entries, func(x, y Entry) int {
		return cmp.Or(cmp.Compare(kindOrder(x.Kind), kindOrder(y.Kind)), cmp.Compare(x.Name, y.Name), comparePos(x.Pos, y.Pos))
	})
	slices.Sort(a.inv.Violations)
	return a.inv, nil
}

func kindOrder(k string) int {
	return slices.Index([]string{"http", "cli", "executor", "goroutine", "replay"}, k)
}

func comparePos(a, b string) int {
	fa, la, _ := strings.Cut(a, ":")
	fb, lb, _ := strings.Cut(b, ":")
	na, _ := strconv.Atoi(la)
	nb, _ := strconv.Atoi(lb)
	return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(na, nb))
}

func (a *analyzer) pos(p token.Pos) string {
	position := a.fset.Position(p)
	rel, err := filepath.Rel(a.root, position.Filename)
	if err != nil {
		rel = position.Filename
	}
	return fmt.Sprintf("%s:%d", filepath.ToSlash(rel), position.Line)
}

// collectMethods indexes every concrete method declared in the module, for
// interface-call expansion.
func (a *analyzer) collectMethods() {
	for _, p := range a.pkgs {
		for _, name := range p.Types.Scope().Names() {
			tn, ok := p.Types.Scope().Lookup(name).(*types.TypeName)
			if !ok {
				continue
			}
			if _, isIface := tn.Type().Underlying().(*types.Interface); isIface {
				continue
			}
			ms := types.NewMethodSet(types.NewPointer(tn.Type()))
			for i := range ms.Len() {
				if f, ok := ms.At(i).Obj().(*types.Func); ok && f.Pkg() == p.Types {
					a.methods[f.Name()] = append(a.methods[f.Name()], f)
				}
			}
		}
	}
}

func (a *analyzer) edge(from, to string) {
	if a.edges[from] == nil {
		a.edges[from] = map[string]bool{}
	}
	a.edges[from][to] = true
}

func (a *analyzer) scanPackage(p *packages.Package) {
	for _, file := range p.Syntax {
		for _, decl := range file.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			obj, _ := p.TypesInfo.Defs[fd.Name].(*types.Func)
			if obj == nil {
				continue
			}
			a.scanBody(p, obj.FullName(), fd.Body)
		}
	}
}

// scanBody records the references and sink calls of a function body
// (nested function literals count for their enclosing function) under node.
func (a *analyzer) scanBody(p *packages.Package, node string, body ast.Node) {
	info := p.TypesInfo
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Ident:
			if f, ok := info.Uses[n].(*types.Func); ok {
				a.reference(node, f)
			}
		case *ast.CallExpr:
			f := callee(info, n)
			if f == nil {
				return true
			}
			if cat := sinkCategory(f); cat != "" && !readOnlyOpen(info, f, n) {
				a.addSite(p, node, f, cat, n.Pos())
			}
		case *ast.GoStmt:
			a.goroutine(p, node, n)
		}
		return true
	})
}

func (a *analyzer) reference(from string, f *types.Func) {
	sig, _ := f.Type().(*types.Signature)
	if sig != nil && sig.Recv() != nil {
		if _, isIface := sig.Recv().Type().Underlying().(*types.Interface); isIface {
			key := "iface:" + f.FullName()
			a.ifaceUse[key] = f
			a.edge(from, key)
			return
		}
	}
	a.edge(from, f.FullName())
}

func callee(info *types.Info, call *ast.CallExpr) *types.Func {
	switch fn := ast.Unparen(call.Fun).(type) {
	case *ast.Ident:
		f, _ := info.Uses[fn].(*types.Func)
		return f
	case *ast.SelectorExpr:
		f, _ := info.Uses[fn.Sel].(*types.Func)
		return f
	}
	return nil
}

func (a *analyzer) addSite(p *packages.Package, node string, f *types.Func, cat string, pos token.Pos) {
	a.sinks[node] = append(a.sinks[node], cat)
	s := Site{Category: cat, Call: f.FullName(), Func: short(node), Pos: a.pos(pos), Pkg: p.PkgPath}
	if pl, ok := allowed[p.PkgPath]; ok {
		s.Place, s.Reason = pl.name, pl.reason
	} else {
		a.inv.Violations = append(a.inv.Violations, fmt.Sprintf("%s: %s call %s in %s is outside every allowed place", s.Pos, cat, s.Call, s.Func))
	}
	if p.PkgPath == executorPkg {
		a.inExec[node] = true
	}
	a.inv.Sites = append(a.inv.Sites, s)
}

// goroutine records a `go` statement as an entry of its own.
func (a *analyzer) goroutine(p *packages.Package, enclosing string, g *ast.GoStmt) {
	node := "goroutine@" + a.pos(g.Pos())
	if lit, ok := g.Call.Fun.(*ast.FuncLit); ok {
		a.scanBody(p, node, lit.Body)
	} else if f := callee(p.TypesInfo, g.Call); f != nil {
		a.reference(node, f)
		if cat := sinkCategory(f); cat != "" {
			a.sinks[node] = append(a.sinks[node], cat)
		}
	}
	var calls []string
	for callee := range a.edges[node] {
		if strings.HasPrefix(strings.TrimPrefix(strings.TrimPrefix(callee, "iface:"), "(*"), module) || strings.HasPrefix(callee, "("+module) {
			calls = append(calls, short(callee))
		}
	}
	slices.Sort(calls)
	name := "go statement in " + short(enclosing)
	if len(calls) > 0 {
		name += " -> " + strings.Join(calls, ", ")
	}
	a.inv.Entries = append(a.inv.Entries, Entry{Kind: "goroutine", Name: name, Func: node, Pos: a.pos(g.Pos())})
}

// expandInterfaces adds an edge from each used interface method to every
// module method of the same name whose receiver implements the interface.
func (a *analyzer) expandInterfaces() {
	for key, im := range a.ifaceUse {
		iface, _ := im.Type().(*types.Signature).Recv().Type().Underlying().(*types.Interface)
		for _, m := range a.methods[im.Name()] {
			recv := m.Type().(*types.Signature).Recv().Type()
			if types.Implements(recv, iface) || types.Implements(types.NewPointer(derefType(recv)), iface) {
				a.edge(key, m.FullName())
			}
		}
	}
}

func derefType(t types.Type) types.Type {
	if p, ok := t.(*types.Pointer); ok {
		return p.Elem()
	}
	return t
}

func short(name string) string { return strings.ReplaceAll(name, module+"/", "") }
