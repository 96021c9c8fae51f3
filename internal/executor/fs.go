package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// sandbox opens per-tenant roots: <dir>/<tenant>. Every file operation goes
// through *os.Root, which refuses any path, "..", absolute path or symlink
// that resolves outside the root, also when the tree changes under it.
type sandbox struct {
	dir     string
	maxFile int64
}

// create makes t's sandbox directory on first use and opens it (writes).
func (s *sandbox) create(t tenant.ID) (*os.Root, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, t.String()), 0o750); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", t, err)
	}
	return s.open(t)
}

// open opens t's existing sandbox (reads and deletes: a sandbox that does
// not exist yet holds nothing).
func (s *sandbox) open(t tenant.ID) (*os.Root, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(filepath.Join(s.dir, t.String()))
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", t, err)
	}
	return r, nil
}

// local rejects, before any I/O, a target that is not a plain relative path.
func local(target string) error {
	if !policy.PathLocal(target) {
		return fmt.Errorf("%q: %w", target, ErrPathEscape)
	}
	return nil
}

// in checks target lexically, opens t's root with open and calls fn with it.
func in(t tenant.ID, target string, open func(tenant.ID) (*os.Root, error), fn func(root *os.Root) (map[string]string, error)) (map[string]string, error) {
	if err := local(target); err != nil {
		return nil, err
	}
	root, err := open(t)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return fn(root)
}

func (s *sandbox) read(t tenant.ID, target string) (map[string]string, error) {
	return in(t, target, s.open, func(root *os.Root) (map[string]string, error) { return s.readIn(root, target) })
}

func (s *sandbox) readIn(root *os.Root, target string) (map[string]string, error) {
	f, err := root.Open(target)
	if err != nil {
		return nil, fmt.Errorf("fs.read %q: %w", target, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("fs.read %q: %w", target, err)
	}
	if int64(len(b)) > s.maxFile {
		return nil, fmt.Errorf("fs.read %q: %w (%d bytes)", target, ErrTooLarge, s.maxFile)
	}
	out := digest(b)
	out["content"] = string(b)
	return out, nil
}

func (s *sandbox) write(t tenant.ID, target, content string) (map[string]string, error) {
	if int64(len(content)) > s.maxFile {
		return nil, fmt.Errorf("fs.write %q: %w", target, ErrTooLarge)
	}
	return in(t, target, s.create, func(root *os.Root) (map[string]string, error) { return writeIn(root, target, content) })
}

func writeIn(root *os.Root, target, content string) (map[string]string, error) {
	if dir := path.Dir(filepath.ToSlash(target)); dir != "." {
		if err := root.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("fs.write %q: %w", target, err)
		}
	}
	// Write a temporary file in the same directory, then rename: readers
	// never see a half-written file.
	tmp := target + ".exoarmur-tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o640)
	if errors.Is(err, os.ErrExist) {
		if rerr := root.Remove(tmp); rerr != nil {
			return nil, fmt.Errorf("fs.write %q: stale temp file: %w", target, rerr)
		}
		f, err = root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o640)
	}
	if err != nil {
		return nil, fmt.Errorf("fs.write %q: %w", target, err)
	}
	_, werr := io.WriteString(f, content)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = root.Rename(tmp, target)
	}
	if werr != nil {
		_ = root.Remove(tmp)
		return nil, fmt.Errorf("fs.write %q: %w", target, werr)
	}
	return digest([]byte(content)), nil
}

func (s *sandbox) remove(t tenant.ID, target string) (map[string]string, error) {
	return in(t, target, s.open, func(root *os.Root) (map[string]string, error) { return removeIn(root, target) })
}

func removeIn(root *os.Root, target string) (map[string]string, error) {
	fi, err := root.Lstat(target)
	if err != nil {
		return nil, fmt.Errorf("fs.delete %q: %w", target, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("fs.delete %q: is a directory; only files are deleted", target)
	}
	if err := root.Remove(target); err != nil {
		return nil, fmt.Errorf("fs.delete %q: %w", target, err)
	}
	return map[string]string{"deleted": target}, nil
}

type fsRead struct{ s *sandbox }
type fsWrite struct{ s *sandbox }
type fsDelete struct{ s *sandbox }

var (
	_ gate.Executor = fsRead{}
	_ gate.Executor = fsWrite{}
	_ gate.Executor = fsDelete{}
)

// Run reads a file from the tenant sandbox.
func (e fsRead) Run(_ context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, "fs.read"); err != nil {
		return nil, err
	}
	return e.s.read(p.Tenant(), p.Intent().Target)
}

// Run writes params.content to a file in the tenant sandbox.
func (e fsWrite) Run(_ context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, "fs.write"); err != nil {
		return nil, err
	}
	in := p.Intent()
	return e.s.write(p.Tenant(), in.Target, in.Params["content"])
}

// Run deletes one file from the tenant sandbox.
func (e fsDelete) Run(_ context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, "fs.delete"); err != nil {
		return nil, err
	}
	return e.s.remove(p.Tenant(), p.Intent().Target)
}
