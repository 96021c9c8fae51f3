package action

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// TestBuiltin: the five built-in types, in registry order, each with its
// class, an effect for the policy and an executor kind.
func TestBuiltin(t *testing.T) {
	want := []struct {
		typ, class, effect string
		readOnly           bool
		kind               ExecutorKind
		method             string
	}{
		{FSRead, contract.A0, "fs", true, SandboxRead, ""},
		{FSWrite, contract.A1, "fs", false, SandboxWrite, ""},
		{HTTPGet, contract.A0, "http", true, HTTPRequest, "GET"},
		{HTTPPost, contract.A2, "http", false, HTTPRequest, "POST"},
		{FSDelete, contract.A3, "fs", false, SandboxDelete, ""},
	}
	targets := map[string][2]string{ // an allowed and a denied target of each effect
		"fs":   {"notes/a.txt", "../a.txt"},
		"http": {"https://api.example.com/x", "https://evil.example.com/x"},
	}
	list := Builtin().List()
	if len(list) != len(want) {
		t.Fatalf("Builtin() has %d registrations, want %d", len(list), len(want))
	}
	for i, w := range want {
		r := list[i]
		if r.Type != w.typ || r.Class != w.class || r.Effect.Name() != w.effect || r.ReadOnly != w.readOnly ||
			r.Executor.Kind != w.kind || r.Executor.Method != w.method || r.Description == "" {
			t.Errorf("registration %d = %+v, want %+v", i, r, w)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", r.Type, err)
		}
		if !slices.Contains(Kinds(), r.Executor.Kind) {
			t.Errorf("%s: executor kind %q is not declared", r.Type, r.Executor.Kind)
		}
		// Its effect builds a resource and context the default bundle
		// decides on: a target of its kind is allowed, another denied.
		for target, allowed := range map[string]bool{targets[w.effect][0]: true, targets[w.effect][1]: false} {
			res := policy.Evaluate(policy.Default(), policy.Request{PrincipalID: "p", Role: "agent", Action: r.Type, Class: r.Class,
				Effect: r.Effect, Target: target, Allowlist: []string{"api.example.com"}})
			if res.Allowed != allowed || len(res.Errors) > 0 || len(res.Reasons) != 1 || !strings.HasPrefix(res.Reasons[0], w.effect+"-") {
				t.Errorf("%s %q: policy says %+v, want allowed=%t by an %s policy", r.Type, target, res, allowed, w.effect)
			}
		}
	}
	if first, again := Builtin(), Builtin(); first != again {
		t.Error("Builtin() builds a new registry on every call")
	}
}

func TestLookup(t *testing.T) {
	reg := Builtin()
	tests := []struct {
		typ   string
		ok    bool
		class string
	}{
		{FSRead, true, contract.A0},
		{FSWrite, true, contract.A1},
		{HTTPGet, true, contract.A0},
		{HTTPPost, true, contract.A2},
		{FSDelete, true, contract.A3},
		{"shell.exec", false, ""},
		{"FS.READ", false, ""},
		{"fs.read ", false, ""},
		{"", false, ""},
		{"A0", false, ""},
		{"*", false, ""},
	}
	for _, tt := range tests {
		r, ok := reg.Lookup(tt.typ)
		if ok != tt.ok || r.Class != tt.class || reg.ClassOf(tt.typ) != tt.class || (ok && r.Type != tt.typ) {
			t.Errorf("Lookup(%q) = %+v, %t; ClassOf = %q; want ok=%t class %q", tt.typ, r, ok, reg.ClassOf(tt.typ), tt.ok, tt.class)
		}
	}
	var none *Registry
	if _, ok := none.Lookup(FSRead); ok || none.ClassOf(FSRead) != "" || none.List() != nil {
		t.Error("a nil registry knows an action type")
	}
}

// TestListIsACopy: the registry cannot be changed through what it returns.
func TestListIsACopy(t *testing.T) {
	reg, err := New(Builtin().List()...)
	if err != nil {
		t.Fatal(err)
	}
	l := reg.List()
	l[0].Class = contract.A3
	r, _ := reg.Lookup(l[0].Type)
	if r.Class != contract.A0 || reg.List()[0].Class != contract.A0 {
		t.Fatal("changing a listed registration changed the registry")
	}
}

// TestOrder: a registry lists its registrations in the order given.
func TestOrder(t *testing.T) {
	b := Builtin().List()
	for _, order := range [][]int{{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 0, 4}, {}} {
		var regs []Registration
		var want []string
		for _, i := range order {
			regs = append(regs, b[i])
			want = append(want, b[i].Type)
		}
		reg, err := New(regs...)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range reg.List() {
			got = append(got, r.Type)
		}
		if !slices.Equal(got, want) {
			t.Errorf("New(%v).List() = %v", want, got)
		}
	}
}

func note() Registration {
	return Registration{Type: "notes.read", Class: contract.A0, ReadOnly: true, Description: "a note", Effect: policy.FS, Executor: Executor{Kind: SandboxRead}}
}

// TestInvalidRegistrationsAreRefused: New refuses a malformed or
// inconsistent registration, and a second one of a type, naming it.
func TestInvalidRegistrationsAreRefused(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Registration)
		want   string
	}{
		{"no type", func(r *Registration) { r.Type = "" }, "at least 3 bytes"},
		{"one word", func(r *Registration) { r.Type = "notes" }, "at least two segments"},
		{"one word with _", func(r *Registration) { r.Type = "notes_read" }, "at least two segments"},
		{"upper case", func(r *Registration) { r.Type = "Notes.read" }, "only lower-case letters"},
		{"leading dot", func(r *Registration) { r.Type = ".notes.read" }, "no empty segment"},
		{"double dot", func(r *Registration) { r.Type = "notes..read" }, "no empty segment"},
		{"trailing dot", func(r *Registration) { r.Type = "notes.read." }, "no empty segment"},
		{"segment starting with _", func(r *Registration) { r.Type = "notes._read" }, "starts with a lower-case letter or digit"},
		{"segment starting with -", func(r *Registration) { r.Type = "-notes.read" }, "starts with a lower-case letter or digit"},
		{"non-ASCII", func(r *Registration) { r.Type = "notes.lés" }, "only lower-case letters"},
		{"space", func(r *Registration) { r.Type = "notes.read all" }, "only lower-case letters"},
		{"too long", func(r *Registration) { r.Type = "n." + strings.Repeat("r", 127) }, "at most 128"},
		{"no class", func(r *Registration) { r.Class = "" }, "not one of A0..A3"},
		{"bad class", func(r *Registration) { r.Class = "A4" }, "not one of A0..A3"},
		{"no description", func(r *Registration) { r.Description = "" }, "description"},
		{"no effect", func(r *Registration) { r.Effect = policy.Effect{} }, "an effect"},
		{"no executor", func(r *Registration) { r.Executor = Executor{} }, "executor kind"},
		{"unknown executor", func(r *Registration) { r.Executor.Kind = "shell" }, "executor kind"},
		{"executor on another effect", func(r *Registration) { r.Effect = policy.HTTP }, "acts on fs targets"},
		{"http executor on files", func(r *Registration) {
			r.Executor = Executor{Kind: HTTPRequest, Method: "GET"}
		}, "acts on http targets"},
		{"http without a method", func(r *Registration) {
			r.Effect, r.Executor = policy.HTTP, Executor{Kind: HTTPRequest}
		}, "method"},
		{"http with another method", func(r *Registration) {
			r.Effect, r.Executor = policy.HTTP, Executor{Kind: HTTPRequest, Method: "DELETE"}
		}, "method"},
		{"method on a sandbox kind", func(r *Registration) { r.Executor.Method = "GET" }, "takes no method"},
		{"A0 that is not read-only", func(r *Registration) { r.ReadOnly = false }, "must be read-only"},
		{"read-only on a writing executor", func(r *Registration) { r.Class, r.Executor.Kind = contract.A1, SandboxWrite }, "cannot run"},
		{"read-only A0 POST", func(r *Registration) {
			r.Effect, r.Executor = policy.HTTP, Executor{Kind: HTTPRequest, Method: "POST"}
		}, "cannot run"},
	}
	if _, err := New(note()); err != nil {
		t.Fatalf("the valid registration is refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := note()
			tt.mutate(&r)
			_, err := New(append(Builtin().List(), r)...)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New(%+v) = %v, want ErrInvalid saying %q", r, err, tt.want)
			}
		})
	}
}

// TestWideNamesAreAccepted: a registration may carry a v2 name (wider
// than V1's two lower-case words), up to 128 bytes; a V1-shaped name
// longer than 64 bytes is a v2 name.
func TestWideNamesAreAccepted(t *testing.T) {
	for _, typ := range []string{"notes.read.all", "notes.read2", "notes.read_all", "notes.read-all", "mcp.fs.read_text_file",
		"mcp.everything.get-sum", "n." + strings.Repeat("r", 63), "n." + strings.Repeat("r", 126)} {
		r := note()
		r.Type = typ
		reg, err := New(append(Builtin().List(), r)...)
		if err != nil {
			t.Errorf("%s: %v", typ, err)
			continue
		}
		if got, ok := reg.Lookup(typ); !ok || got.Type != typ || contract.ActionNameVersion(typ) != contract.SchemaVersionV2 {
			t.Errorf("%s: registered as %+v (version %q)", typ, got, contract.ActionNameVersion(typ))
		}
	}
}

func TestDuplicatesAreRefused(t *testing.T) {
	tests := []struct {
		name string
		regs []Registration
	}{
		{"the same twice", []Registration{note(), note()}},
		{"a built-in twice", append(Builtin().List(), Builtin().List()[4])},
		{"a built-in redeclared", append(Builtin().List(), Registration{Type: FSDelete, Class: contract.A1,
			Description: "softer", Effect: policy.FS, Executor: Executor{Kind: SandboxDelete}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.regs...); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "registered twice") {
				t.Fatalf("New = %v, want a duplicate refused", err)
			}
		})
	}
}

// TestEveryKindIsChecked: each declared executor kind names the effect
// its targets are, so a registration's policy sees what it touches.
func TestEveryKindIsChecked(t *testing.T) {
	for _, k := range Kinds() {
		if kinds[k].effect == "" {
			t.Errorf("executor kind %s has no effect", k)
		}
	}
}
