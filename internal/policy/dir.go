package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
)

// A policy directory (serve --policy-dir, exoarmur policy validate|test)
// holds a bundle as *.cedar files: the action policies
// (@scope("action")) a team writes and the operation policies
// (@scope("operation")) that authorize the API. `exoarmur policy init DIR`
// starts one from the default bundle. Subdirectories and other files are
// not part of the bundle (the test cases, *_test.json, live beside it).
//
// The bundle's source is its files concatenated in name order, each after
// a line naming it: the same files give the same hash wherever the
// directory is, and the hash is what every decision records and replay
// finds the bundle by.

// ErrInvalidBundle marks a policy directory that does not make a bundle:
// its Problems say where and why.
var ErrInvalidBundle = errors.New("invalid policy bundle")

// Problems is the error of a directory that does not validate: every
// problem found, in file and line order.
type Problems struct {
	Dir  string
	List []Problem
}

func (p *Problems) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy dir %s: %d problem(s):", p.Dir, len(p.List))
	for _, pr := range p.List {
		b.WriteString("\n  " + pr.String())
	}
	return b.String()
}

func (p *Problems) Unwrap() error { return ErrInvalidBundle }

// fileHeader starts each file in a bundle's source.
const fileHeader = "// exoarmur policy file: "

// maxPolicyFileBytes bounds one policy file (a bundle is stored as one
// record).
const maxPolicyFileBytes = 256 << 10

// LoadDir reads the bundle of the policy directory dir in fsys, validated
// by v: every file must parse and type-check against the schema (Problem:
// file, line, policy id), the @ids must be unique across the files, and
// some policy must decide API operations (else every API call would be
// denied). Any problem is a *Problems (ErrInvalidBundle) and no bundle.
func LoadDir(fsys fs.FS, dir string, v *Validator) (*Bundle, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: %w", dir, err)
	}
	var names []string
	probs := &Problems{Dir: dir}
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".cedar") {
			names = append(names, e.Name())
		}
	}
	// A policy file below the top level would be silently left out (and
	// a forbid in it with it): refused.
	_ = fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".cedar") && path.Dir(p) != dir {
			rel := strings.TrimPrefix(p, dir+"/")
			probs.List = append(probs.List, Problem{File: rel, Message: "a policy file in a subdirectory is not part of the bundle: move it to the top level"})
		}
		return nil
	})
	if len(probs.List) > 0 {
		return nil, probs
	}
	files := make([]File, 0, len(names))
	for _, name := range names {
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("policy dir %s: %w", dir, err)
		}
		files = append(files, File{Name: name, Source: b})
	}
	return LoadFiles(dir, files, v)
}

// File is one policy file of a bundle: its name (NAME.cedar, no
// directory) and its cedar source.
type File struct {
	Name   string `json:"name"`
	Source []byte `json:"source"`
}

// MaxFiles bounds the files of one bundle.
const MaxFiles = 64

// LoadFiles is LoadDir on files already read (an activation sent through
// the API; an archived bundle split back with SplitSource): the same
// checks, the same source and so the same hash for the same files, in
// whatever order they come. dir names the bundle in problems.
func LoadFiles(dir string, files []File, v *Validator) (*Bundle, error) {
	probs := &Problems{Dir: dir}
	if len(files) == 0 {
		probs.List = append(probs.List, Problem{File: dir, Message: "no *.cedar file (exoarmur policy init DIR writes the default bundle to start from)"})
		return nil, probs
	}
	if len(files) > MaxFiles {
		probs.List = append(probs.List, Problem{File: dir, Message: fmt.Sprintf("%d files: a bundle holds at most %d", len(files), MaxFiles)})
		return nil, probs
	}
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	var src bytes.Buffer
	seen := map[string]string{}
	for i, f := range files {
		name, b := f.Name, f.Source
		switch {
		case !validFileName(name):
			probs.List = append(probs.List, Problem{File: name, Message: "a policy file is named NAME.cedar (letters, digits, '.', '_', '-'; no directory)"})
			continue
		case i > 0 && files[i-1].Name == name:
			probs.List = append(probs.List, Problem{File: name, Message: "two files of this name"})
			continue
		case len(b) > maxPolicyFileBytes:
			probs.List = append(probs.List, Problem{File: name, Message: fmt.Sprintf("%d bytes: a policy file holds at most %d", len(b), maxPolicyFileBytes)})
			continue
		case bytes.Contains(b, []byte(fileHeader)):
			probs.List = append(probs.List, Problem{File: name, Message: fmt.Sprintf("the line %q is reserved: it separates the files of a stored bundle", strings.TrimSpace(fileHeader))})
			continue
		}
		probs.List = append(probs.List, v.File(name, b, seen)...)
		probs.List = append(probs.List, unscoped(name, b)...)
		src.WriteString(fileHeader + name + "\n")
		src.Write(b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			src.WriteByte('\n')
		}
	}
	if len(probs.List) > 0 {
		return nil, probs
	}
	bundle, err := Compile(path.Base(dir), src.Bytes())
	if err != nil {
		return nil, &Problems{Dir: dir, List: []Problem{{File: dir, Message: err.Error()}}}
	}
	if len(bundle.byScope["operation"]) == 0 {
		return nil, &Problems{Dir: dir, List: []Problem{{File: dir, Message: "no policy decides API operations (@scope(\"operation\")): every API call would be denied; copy operations.cedar from `exoarmur policy init`"}}}
	}
	if broken := FloorViolations(bundle); len(broken) > 0 {
		return nil, &Problems{Dir: dir, List: broken}
	}
	return bundle, nil
}

func validFileName(name string) bool {
	base, ok := strings.CutSuffix(name, ".cedar")
	if !ok || base == "" || len(name) > 128 || strings.HasPrefix(name, ".") {
		return false
	}
	for _, r := range base {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// SplitSource splits the source of a bundle LoadFiles made (an archived
// one) back into its files: LoadFiles of them gives the same source. A
// source with no file line (a built-in default) is one file,
// bundle.cedar.
func SplitSource(src []byte) []File {
	if !bytes.HasPrefix(src, []byte(fileHeader)) {
		return []File{{Name: "bundle.cedar", Source: src}}
	}
	parts := bytes.Split(src[len(fileHeader):], []byte("\n"+fileHeader))
	files := make([]File, 0, len(parts))
	for i, part := range parts {
		name, body, found := bytes.Cut(part, []byte("\n"))
		if found && i < len(parts)-1 {
			// The split took the newline that ended this file.
			body = append(bytes.Clone(body), '\n')
		}
		files = append(files, File{Name: string(name), Source: body})
	}
	return files
}

// unscoped names the policies of a user file without an @scope: in a
// user's bundle every policy says whether it decides actions or API
// operations (one left unscoped would decide both, and a broad action
// permit would open the API).
func unscoped(name string, src []byte) []Problem {
	list, err := cedar.NewPolicyListFromBytes(name, src)
	if err != nil {
		return nil // the validator named it
	}
	var out []Problem
	for _, p := range list {
		if p.Annotations()["scope"] == "" {
			pos := p.Position()
			out = append(out, Problem{File: name, Line: pos.Line, Column: pos.Column, PolicyID: string(p.Annotations()["id"]),
				Message: "no @scope: say @scope(\"action\") or @scope(\"operation\")"})
		}
	}
	return out
}

// floor is what no bundle may permit, whatever its policies say: the
// global powers without the explicit system grant, and the roles' limits
// the promises name (an auditor only reads; an agent never approves,
// resolves, flips a switch, manages keys or reads the tenant's whole
// audit or every intent).
var floor = func() []OpRequest {
	var out []OpRequest
	for _, role := range []string{"agent", "auditor", "operator", "admin"} {
		for _, op := range []string{OpReadGlobalSwitch, OpFlipGlobalSwitch, OpManageKeys, OpReadMetrics, OpActivateGlobalPolicy} {
			out = append(out, OpRequest{PrincipalID: "floor", Role: role, Granted: []string{"acme"}, Operation: op})
		}
	}
	for _, op := range []string{OpPropose, OpExecute, OpApprove, OpFlipTenantSwitch, OpResolve, OpManageKeys, OpActivatePolicy} {
		out = append(out, OpRequest{PrincipalID: "floor", Role: "auditor", Granted: []string{"acme"}, Operation: op, Tenant: "acme"})
	}
	for _, op := range []string{OpApprove, OpFlipTenantSwitch, OpResolve, OpManageKeys, OpReadTenantAudit, OpReadTenantIntents, OpActivatePolicy} {
		out = append(out, OpRequest{PrincipalID: "floor", Role: "agent", Granted: []string{"acme"}, Operation: op, Tenant: "acme"})
	}
	return out
}()

// FloorViolations lists what b permits that no bundle may (floor): a
// bundle that would is refused at load.
func FloorViolations(b *Bundle) []Problem {
	var out []Problem
	for _, req := range floor {
		if Authorize(b, req).Allowed {
			where := "the system"
			if req.Tenant != "" {
				where = "tenant " + req.Tenant
			}
			out = append(out, Problem{File: b.Name(), Message: fmt.Sprintf("the bundle permits a %s holding %v to %s on %s: no bundle may (global powers need the explicit system grant; an auditor only reads; an agent never approves, resolves, flips a switch, activates a policy, manages keys or reads the whole tenant)",
				req.Role, req.Granted, req.Operation, where)})
		}
	}
	return out
}
