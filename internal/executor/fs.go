package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// sandbox opens per-tenant roots: <dir>/<tenant>. Every file operation goes
// through *os.Root, which refuses any path, "..", absolute path or symlink
// that resolves outside the root, also when the tree changes under it.
//
// Whatever else is planted in a sandbox (a FIFO, a socket, a device node, a
// hard link to a file outside) can neither hang an executor nor leak through
// it, and no executor acts on it: every fs action acts only on a regular
// file with a single link, or on a name that does not exist yet.
//   - fs.read opens without blocking and reads only a regular file with a
//     single link, checked on the opened descriptor (fstat, so the file
//     checked is the file read); it reads in chunks and stops when its
//     context is done.
//   - fs.write refuses an existing target that is not a regular file or
//     has more than one link (fresh), checked before anything is made and
//     again just before the commit; it never opens an existing name: it
//     creates a fresh temporary file (O_EXCL) and renames it over the
//     target.
//   - fs.delete refuses the same (plain) and removes a name without
//     opening it.
//
// A symbolic link inside the sandbox is a name like any other to fs.write
// and fs.delete: the link itself is replaced or removed, never what it
// points to. fs.write and fs.delete check the name with lstat, not an
// opened descriptor: they act on the name (rename over it, unlink it) and
// never through a descriptor, so opening the target (a device node's open
// can have effects of its own) would check nothing the act uses; a name
// swapped between the check and the act changes which name is replaced or
// removed, never writes into or reads from another file.
//
// Errors name only the sandbox-relative target, never a host path, absolute
// or relative to the working directory (hide): results are stored in the
// audit and shown to the tenant.
type sandbox struct {
	dir     string
	maxFile int64 // fs.write content limit
	// maxContent bounds what fs.read returns of a file (contract.JSONLen):
	// a larger file is cut to fit, marked truncated, with its size (cut).
	maxContent int64
}

// create makes t's sandbox directory on first use and opens it (writes).
func (s *sandbox) create(t tenant.ID) (*os.Root, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, t.String()), 0o750); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", t, hide(err, s.dir))
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
		return nil, fmt.Errorf("sandbox %s: %w", t, hide(err, s.dir))
	}
	return r, nil
}

// hide rewrites the host paths in err, which name dir (a tenant's
// sandbox, or the sandbox root) or a file under it, to what the tenant
// sees: a path under dir becomes relative to it, dir itself and any other
// absolute path are dropped. *os.Root methods name the path they were given
// (relative to the root) and are left alone, but methods of the *os.File a
// root opens, and os.OpenRoot and os.MkdirAll, name the host path, absolute
// or relative to the working directory as dir is ("read
// data/sandbox/acme/d: is a directory" becomes "read d: is a directory").
// The error's chain below the path is kept (errors.Is).
func hide(err error, dir string) error {
	dir = filepath.Clean(dir)
	rel := func(p string) (string, bool) {
		if r, ok := strings.CutPrefix(filepath.Clean(p), dir+string(filepath.Separator)); ok {
			return r, true
		}
		if filepath.Clean(p) == dir || filepath.IsAbs(p) {
			return "", true
		}
		return p, false
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		if r, host := rel(pe.Path); host {
			if r == "" {
				return fmt.Errorf("%s: %w", pe.Op, pe.Err)
			}
			return &os.PathError{Op: pe.Op, Path: r, Err: pe.Err}
		}
		return err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		o, ho := rel(le.Old)
		n, hn := rel(le.New)
		if ho || hn {
			return fmt.Errorf("%s %s %s: %w", le.Op, cmp.Or(o, "-"), cmp.Or(n, "-"), le.Err)
		}
	}
	return err
}

// readChunk is how much fs.read reads between checks of its context.
const readChunk = 32 << 10

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

func (s *sandbox) read(ctx context.Context, t tenant.ID, target string) (map[string]string, error) {
	return in(t, target, s.open, func(root *os.Root) (map[string]string, error) { return s.readIn(ctx, root, target) })
}

func (s *sandbox) readIn(ctx context.Context, root *os.Root, target string) (map[string]string, error) {
	fail := func(err error) (map[string]string, error) {
		return nil, fmt.Errorf("fs.read %q: %w", target, hide(err, root.Name()))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	// open(2) of a FIFO for reading blocks until a writer appears;
	// O_NONBLOCK makes it return at once, and the fstat below refuses
	// anything not regular before a byte is read. (O_NONBLOCK has no effect
	// on reads of a regular file.) O_NOCTTY: a terminal device planted in
	// the sandbox never becomes the process's controlling terminal.
	f, err := root.OpenFile(target, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := readable(fi); err != nil {
		return fail(err)
	}
	// At most one byte more than fits: a larger file is cut, not read whole.
	b, err := readAll(ctx, f, s.maxContent+1)
	if err != nil {
		return fail(err)
	}
	return cut("content", b, fi.Size(), s.maxContent), nil
}

// readable refuses what fs.read must not read: anything but a regular file
// (a directory, FIFO, socket or device), and a regular file with more than
// one link. A hard link is a regular file, so os.Root lets it through, but
// its other name may be outside the sandbox (a host file hard-linked in).
// A link count above one cannot tell inside from outside, so every
// hard-linked file is refused; fs.write never makes one.
func readable(fi os.FileInfo) error {
	m := fi.Mode()
	if !m.IsRegular() {
		return fmt.Errorf("%w (%s)", ErrNotRegular, kind(m))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return fmt.Errorf("%w (%d)", ErrHardLink, st.Nlink)
	}
	return nil
}

// plain refuses an existing name fs.write or fs.delete must not act on:
// anything but a regular file (a directory, FIFO, socket or device) and a
// regular file with more than one link (removing or replacing one name of
// a hard-linked file is not what a file action means, and its other name
// may be outside the sandbox). A symbolic link passes (the link itself is
// replaced or removed); a name that does not exist is lstat's error
// (os.ErrNotExist). The name is checked with lstat, never opened.
func plain(root *os.Root, target string) error {
	fi, err := root.Lstat(target)
	if err != nil || fi.Mode()&os.ModeSymlink != 0 {
		return err
	}
	return readable(fi)
}

// fresh is plain for fs.write, which may create the target: a name that
// does not exist passes.
func fresh(root *os.Root, target string) error {
	if err := plain(root, target); !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "mode " + m.String()
	}
}

// readAll reads r to EOF, at most limit bytes, in chunks, and stops with
// ctx's error as soon as ctx is done.
func readAll(ctx context.Context, r io.Reader, limit int64) ([]byte, error) {
	r = io.LimitReader(r, limit)
	var b []byte
	buf := make([]byte, min(readChunk, limit))
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(buf)
		b = append(b, buf[:n]...)
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (s *sandbox) write(ctx context.Context, t tenant.ID, target, content string) (map[string]string, error) {
	if int64(len(content)) > s.maxFile {
		return nil, fmt.Errorf("fs.write %q: %w", target, ErrTooLarge)
	}
	return in(t, target, s.create, func(root *os.Root) (map[string]string, error) { return writeIn(ctx, root, target, content) })
}

// writeIn never opens an existing file: the temporary file is created with
// O_EXCL (which also refuses a symlink), so a FIFO planted under the
// temporary name is never opened or written into (it is removed: the name
// is the executor's own). An existing target that is not a regular file
// with one link is refused (fresh), before anything is made and again
// just before the rename, the commit point. The context is checked at
// both points too: once it is done, the target is left as it was.
func writeIn(ctx context.Context, root *os.Root, target, content string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs.write %q: %w", target, err)
	}
	if err := fresh(root, target); err != nil {
		return nil, fmt.Errorf("fs.write %q: %w", target, err)
	}
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
		werr = ctx.Err()
	}
	if werr == nil {
		werr = fresh(root, target)
	}
	if werr == nil {
		werr = root.Rename(tmp, target)
	}
	if werr != nil {
		_ = root.Remove(tmp)
		return nil, fmt.Errorf("fs.write %q: %w", target, hide(werr, root.Name()))
	}
	return digest([]byte(content)), nil
}

func (s *sandbox) remove(ctx context.Context, t tenant.ID, target string) (map[string]string, error) {
	return in(t, target, s.open, func(root *os.Root) (map[string]string, error) { return removeIn(ctx, root, target) })
}

// removeIn deletes one name: a regular file with a single link, or a
// symbolic link (plain). It never opens the file, so a FIFO or device
// cannot block it; see sandbox for what may be deleted.
func removeIn(ctx context.Context, root *os.Root, target string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs.delete %q: %w", target, err)
	}
	if err := plain(root, target); err != nil {
		return nil, fmt.Errorf("fs.delete %q: %w", target, err)
	}
	if err := root.Remove(target); err != nil {
		return nil, fmt.Errorf("fs.delete %q: %w", target, err)
	}
	return map[string]string{"deleted": target}, nil
}

// The sandbox executors, each bound to its action type (a permit for
// another type is refused).
type fsRead struct {
	s      *sandbox
	action string
}

type fsWrite struct {
	s      *sandbox
	action string
}

type fsDelete struct {
	s      *sandbox
	action string
}

var (
	_ implementation = fsRead{}
	_ implementation = fsWrite{}
	_ implementation = fsDelete{}
)

func (fsRead) bind(r action.Registration, e *env) gate.Executor   { return fsRead{e.sandbox, r.Type} }
func (fsWrite) bind(r action.Registration, e *env) gate.Executor  { return fsWrite{e.sandbox, r.Type} }
func (fsDelete) bind(r action.Registration, e *env) gate.Executor { return fsDelete{e.sandbox, r.Type} }

// Run reads a file from the tenant sandbox.
func (e fsRead) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.action); err != nil {
		return nil, err
	}
	return e.s.read(ctx, p.Tenant(), p.Intent().Target)
}

// Run writes params.content to a file in the tenant sandbox.
func (e fsWrite) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.action); err != nil {
		return nil, err
	}
	in := p.Intent()
	return e.s.write(ctx, p.Tenant(), in.Target, in.Params["content"])
}

// Run deletes one file from the tenant sandbox.
func (e fsDelete) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.action); err != nil {
		return nil, err
	}
	return e.s.remove(ctx, p.Tenant(), p.Intent().Target)
}
