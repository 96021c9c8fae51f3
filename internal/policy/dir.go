package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
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
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".cedar") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	probs := &Problems{Dir: dir}
	if len(names) == 0 {
		probs.List = append(probs.List, Problem{File: dir, Message: "no *.cedar file (exoarmur policy init DIR writes the default bundle to start from)"})
		return nil, probs
	}
	var src bytes.Buffer
	seen := map[string]string{}
	for _, name := range names {
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("policy dir %s: %w", dir, err)
		}
		if len(b) > maxPolicyFileBytes {
			probs.List = append(probs.List, Problem{File: name, Message: fmt.Sprintf("%d bytes: a policy file holds at most %d", len(b), maxPolicyFileBytes)})
			continue
		}
		probs.List = append(probs.List, v.File(name, b, seen)...)
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
	return bundle, nil
}
