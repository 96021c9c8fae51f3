package policy_test

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/exoarmur/exoarmur/internal/policy"
)

func TestLoadDir(t *testing.T) {
	v, err := policy.NewValidator(builtinTypes)
	if err != nil {
		t.Fatal(err)
	}
	def := policy.Default().Source()
	extra := []byte("@id(\"agents-never-delete\")\n@scope(\"action\")\nforbid (principal, action == Action::\"fs.delete\", resource) when { context.role == \"agent\" };\n")
	good := fstest.MapFS{"p/a.cedar": {Data: def}, "p/b.cedar": {Data: extra}, "p/cases_test.json": {Data: []byte("{}")}, "q/b.cedar": {Data: extra}, "q/a.cedar": {Data: def}}
	b1, err := policy.LoadDir(good, "p", v)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := policy.LoadDir(good, "q", v)
	if err != nil {
		t.Fatal(err)
	}
	if b1.Hash() != b2.Hash() || b1.Hash() == policy.Default().Hash() {
		t.Fatalf("the same files in two directories: %s %s", b1.Hash(), b2.Hash())
	}
	tests := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"no files", fstest.MapFS{"p/x.txt": {Data: []byte("x")}}, "no *.cedar file"},
		{"a duplicate id across files", fstest.MapFS{"p/a.cedar": {Data: def}, "p/b.cedar": {Data: extra}, "p/c.cedar": {Data: extra}}, "c.cedar:1:1: policy agents-never-delete: duplicate @id (also in b.cedar:1)"},
		{"no operation policy", fstest.MapFS{"p/b.cedar": {Data: extra}}, "no policy decides API operations"},
		{"an unknown attribute", fstest.MapFS{"p/a.cedar": {Data: def}, "p/z.cedar": {Data: []byte("\n\n@id(\"z\")\npermit (principal, action, resource is File) when { context.path };\n")}}, "z.cedar:3:1: policy z:"},
		{"an unscoped policy", fstest.MapFS{"p/a.cedar": {Data: def}, "p/u.cedar": {Data: []byte("@id(\"u\")\npermit (principal, action, resource) when { context.role == \"agent\" };\n")}}, "u.cedar:1:1: policy u: no @scope"},
		{"a broad operation permit", fstest.MapFS{"p/a.cedar": {Data: def}, "p/o.cedar": {Data: []byte("@id(\"o\")\n@scope(\"operation\")\npermit (principal, action, resource) when { context.role == \"agent\" };\n")}},
			"permits a agent holding [acme] to flip_global_switch on the system"},
		{"an auditor who approves", fstest.MapFS{"p/a.cedar": {Data: def}, "p/o.cedar": {Data: []byte("@id(\"o\")\n@scope(\"operation\")\npermit (principal, action == Action::\"approve\", resource);\n")}},
			"permits a auditor holding [acme] to approve on tenant acme"},
		{"a file in a subdirectory", fstest.MapFS{"p/a.cedar": {Data: def}, "p/s/deny.cedar": {Data: extra}}, "s/deny.cedar: a policy file in a subdirectory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.LoadDir(tc.fs, "p", v)
			var probs *policy.Problems
			if !errors.As(err, &probs) || !errors.Is(err, policy.ErrInvalidBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v; want problems naming %q", err, tc.want)
			}
		})
	}
}

// TestSplitSourceRoundTrip: an archived bundle's source splits back into
// files that LoadFiles makes into the same bundle (what every node does
// with an activated bundle), in whatever order the files come, and the
// files make the same bundle as the directory holding them.
func TestSplitSourceRoundTrip(t *testing.T) {
	v, err := policy.NewValidator(builtinTypes)
	if err != nil {
		t.Fatal(err)
	}
	def := policy.Default().Source()
	extra := []byte("@id(\"agents-never-delete\")\n@scope(\"action\")\nforbid (principal, action == Action::\"fs.delete\", resource) when { context.role == \"agent\" };") // no final newline
	// Files ending in blank lines, in no newline, and an empty one.
	blank := append(append([]byte{}, def...), '\n', '\n')
	dir, err := policy.LoadDir(fstest.MapFS{"p/z.cedar": {Data: extra}, "p/a.cedar": {Data: blank}, "p/m.cedar": {Data: nil}}, "p", v)
	if err != nil {
		t.Fatal(err)
	}
	files := policy.SplitSource(dir.Source())
	if len(files) != 3 || files[0].Name != "a.cedar" || files[2].Name != "z.cedar" || string(files[0].Source) != string(blank) || len(files[1].Source) != 0 {
		t.Fatalf("split into %q", files)
	}
	again, err := policy.LoadFiles("again", []policy.File{files[2], files[0], files[1]}, v)
	if err != nil {
		t.Fatal(err)
	}
	if again.Hash() != dir.Hash() {
		t.Fatalf("round trip %s, want %s", again.Hash(), dir.Hash())
	}
	// A file may not forge the separator of a stored bundle's files.
	forged := append([]byte("// exoarmur policy file: b.cedar\n"), extra...)
	if _, err := policy.LoadFiles("f", []policy.File{{Name: "a.cedar", Source: def}, {Name: "x.cedar", Source: forged}}, v); !errors.Is(err, policy.ErrInvalidBundle) {
		t.Fatalf("forged separator: %v", err)
	}
	// Two files of one name.
	if _, err := policy.LoadFiles("d", []policy.File{{Name: "a.cedar", Source: def}, {Name: "a.cedar", Source: extra}}, v); err == nil || !strings.Contains(err.Error(), "two files") {
		t.Fatalf("duplicate names: %v", err)
	}
}
