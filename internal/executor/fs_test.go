package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bounded runs fn and fails the test if it has not returned within 5s,
// instead of hanging the test binary. unblock, if set, runs on timeout to
// release what fn is stuck on.
func bounded[T any](t *testing.T, what string, unblock func(), fn func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- fn() }()
	select {
	case v := <-done:
		return v
	case <-time.After(5 * time.Second):
		if unblock != nil {
			unblock()
		}
		t.Fatalf("%s still blocked after 5s", what)
		panic("unreachable")
	}
}

// plant makes acme's sandbox and creates special files in it with mk.
func (w *world) plant(t *testing.T, mk func(dir string) error) string {
	t.Helper()
	dir := filepath.Join(w.sb.dir, "acme")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := mk(dir); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot create the file here: %v", err)
		}
		t.Fatal(err)
	}
	return dir
}

// release opens every FIFO in dir for reading and for writing, without
// blocking, and closes it again: that lets a reader or writer stuck in
// open(2) on it go on.
func release(dir string) func() {
	return func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Type()&os.ModeNamedPipe == 0 {
				continue
			}
			for _, flag := range []int{os.O_RDONLY, os.O_WRONLY} {
				if f, err := os.OpenFile(filepath.Join(dir, e.Name()), flag|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			}
		}
	}
}

func fifo(name string) func(string) error {
	return func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, name), 0o600) }
}

type result struct {
	out map[string]string
	err error
}

// TestReadRefusesSpecialFiles: fs.read of a FIFO (which blocks open(2)
// until a writer appears), a socket, a device, a directory or a hard link
// to a file outside the sandbox fails at once with an error that names the
// target and no host path.
func TestReadRefusesSpecialFiles(t *testing.T) {
	tests := []struct {
		name, target string
		plant        func(w *world) func(dir string) error
		want         error
	}{
		{"fifo", "p", func(*world) func(string) error { return fifo("p") }, ErrNotRegular},
		{"symlink to a fifo", "l", func(*world) func(string) error {
			return func(dir string) error {
				if err := fifo("p")(dir); err != nil {
					return err
				}
				return os.Symlink("p", filepath.Join(dir, "l"))
			}
		}, ErrNotRegular},
		// A FIFO as a directory component is opened with O_DIRECTORY by
		// os.Root, which fails without blocking.
		{"fifo as a directory", "p/x", func(*world) func(string) error { return fifo("p") }, syscall.ENOTDIR},
		// open(2) of a socket fails with ENXIO before the fstat.
		{"socket", "s", func(*world) func(string) error {
			return func(dir string) error { return syscall.Mknod(filepath.Join(dir, "s"), syscall.S_IFSOCK|0o600, 0) }
		}, syscall.ENXIO},
		{"character device", "null", func(*world) func(string) error {
			return func(dir string) error {
				return syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o600, 1<<8|3) // 1,3: /dev/null
			}
		}, ErrNotRegular},
		{"directory", "d", func(*world) func(string) error {
			return func(dir string) error { return os.Mkdir(filepath.Join(dir, "d"), 0o750) }
		}, ErrNotRegular},
		{"hard link to a file outside", "hl.txt", func(w *world) func(string) error {
			return func(dir string) error { return os.Link(w.secret, filepath.Join(dir, "hl.txt")) }
		}, ErrHardLink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			dir := w.plant(t, tt.plant(w))
			r := bounded(t, "fs.read "+tt.target, release(dir), func() result {
				out, err := w.sb.read(t.Context(), acme, tt.target)
				return result{out, err}
			})
			if !errors.Is(r.err, tt.want) {
				t.Fatalf("read %q = %v, %v; want %v", tt.target, r.out, r.err, tt.want)
			}
			if r.out != nil {
				t.Fatalf("read %q returned %v", tt.target, r.out)
			}
			msg := r.err.Error()
			if !strings.HasPrefix(msg, `fs.read "`+tt.target+`": `) || strings.Contains(msg, w.sb.dir) {
				t.Fatalf("error %q does not name only the target", msg)
			}
			t.Log(msg)
		})
	}
}

// TestWriteAndDeleteRefuseSpecialFiles: fs.write and fs.delete refuse a
// target that is not a regular file (a FIFO, a socket, a device, a
// directory) and a regular file with more than one link (a hard link to a
// file outside the sandbox), leave it as it was, never block on it and name
// no host path. A FIFO planted under the write's temporary name is not
// the target: it is replaced (the temporary name is the executor's own).
func TestWriteAndDeleteRefuseSpecialFiles(t *testing.T) {
	hardlink := func(w *world) func(string) error {
		return func(dir string) error { return os.Link(w.secret, filepath.Join(dir, "hl.txt")) }
	}
	socket := func(*world) func(string) error {
		return func(dir string) error { return syscall.Mknod(filepath.Join(dir, "s"), syscall.S_IFSOCK|0o600, 0) }
	}
	device := func(*world) func(string) error {
		return func(dir string) error {
			return syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o600, 1<<8|3) // 1,3: /dev/null
		}
	}
	directory := func(*world) func(string) error {
		return func(dir string) error { return os.Mkdir(filepath.Join(dir, "d"), 0o750) }
	}
	tests := []struct {
		name, op, target string
		plant            func(w *world) func(dir string) error
		wantErr          error // nil: succeeds
	}{
		{"write onto a fifo", "write", "p", func(*world) func(string) error { return fifo("p") }, ErrNotRegular},
		{"write with a fifo as its temp file", "write", "p", func(*world) func(string) error { return fifo("p.exoarmur-tmp") }, nil},
		// The check of the target finds p is not a directory.
		{"write under a fifo", "write", "p/x", func(*world) func(string) error { return fifo("p") }, syscall.ENOTDIR},
		{"write onto a hard link to a file outside", "write", "hl.txt", hardlink, ErrHardLink},
		{"write onto a socket", "write", "s", socket, ErrNotRegular},
		{"write onto a device", "write", "null", device, ErrNotRegular},
		{"write onto a directory", "write", "d", directory, ErrNotRegular},
		{"delete a fifo", "delete", "p", func(*world) func(string) error { return fifo("p") }, ErrNotRegular},
		{"delete a socket", "delete", "s", socket, ErrNotRegular},
		{"delete a device", "delete", "null", device, ErrNotRegular},
		{"delete a directory", "delete", "d", directory, ErrNotRegular},
		{"delete a hard link to a file outside", "delete", "hl.txt", hardlink, ErrHardLink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			dir := w.plant(t, tt.plant(w))
			before, _ := os.Lstat(filepath.Join(dir, tt.target))
			r := bounded(t, "fs."+tt.op+" "+tt.target, release(dir), func() result {
				if tt.op == "write" {
					out, err := w.sb.write(t.Context(), acme, tt.target, "new")
					return result{out, err}
				}
				out, err := w.sb.remove(t.Context(), acme, tt.target)
				return result{out, err}
			})
			if tt.wantErr != nil {
				if !errors.Is(r.err, tt.wantErr) || strings.Contains(r.err.Error(), w.sb.dir) || r.out != nil {
					t.Fatalf("%s %q = %v, %v; want %v without a host path", tt.op, tt.target, r.out, r.err, tt.wantErr)
				}
				if msg := r.err.Error(); !strings.HasPrefix(msg, `fs.`+tt.op+` "`+tt.target+`": `) || strings.Contains(msg, "secret") {
					t.Fatalf("error %q does not name only the target", msg)
				}
				t.Log(r.err)
			} else if r.err != nil {
				t.Fatalf("%s %q: %v", tt.op, tt.target, r.err)
			}
			w.untouched(t)
			st, err := os.Stat(w.secret)
			wantLinks := uint64(1)
			if tt.target == "hl.txt" {
				wantLinks = 2 // the refused hard link is still there
			}
			if err != nil || uint64(st.Sys().(*syscall.Stat_t).Nlink) != wantLinks {
				t.Fatalf("outside file: %v, %v", st, err)
			}
			fi, err := os.Lstat(filepath.Join(dir, tt.target))
			switch {
			case tt.wantErr != nil:
				// Refused: the name is what was planted, untouched.
				if before != nil && (err != nil || fi.Mode() != before.Mode() || !os.SameFile(fi, before)) {
					t.Fatalf("%q changed though refused: %v, %v", tt.target, fi, err)
				}
			case tt.op == "delete":
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%q still there after delete: %v", tt.target, err)
				}
			default:
				if err != nil || !fi.Mode().IsRegular() {
					t.Fatalf("%q after write: %v, %v", tt.target, fi, err)
				}
				if out, err := w.sb.read(t.Context(), acme, tt.target); err != nil || out["content"] != "new" {
					t.Fatalf("read back %q = %v, %v", tt.target, out, err)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, tt.target+".exoarmur-tmp")); !errors.Is(err, os.ErrNotExist) && tt.target != "p/x" {
				t.Fatalf("temp file left behind: %v", err)
			}
		})
	}
}

// cancelingReader returns data forever and cancels its context on the
// first read.
type cancelingReader struct {
	cancel context.CancelFunc
	reads  int
}

func (r *cancelingReader) Read(p []byte) (int, error) {
	r.reads++
	r.cancel()
	return len(p), nil
}

// TestReadStopsWhenContextIsDone: the read loop checks the context between
// chunks, so a context done mid-read stops it at the next chunk.
func TestReadStopsWhenContextIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelingReader{cancel: cancel}
	b, err := readAll(ctx, r, 1<<20)
	if !errors.Is(err, context.Canceled) || b != nil {
		t.Fatalf("readAll = %d bytes, %v; want context.Canceled", len(b), err)
	}
	if r.reads != 1 {
		t.Fatalf("%d reads after the context was done, want 1", r.reads)
	}
	if b, err := readAll(t.Context(), strings.NewReader("hello"), 1<<20); err != nil || string(b) != "hello" {
		t.Fatalf("readAll = %q, %v", b, err)
	}
	if b, err := readAll(t.Context(), io.MultiReader(strings.NewReader("he"), strings.NewReader("llo")), 3); err != nil || string(b) != "hel" {
		t.Fatalf("limited readAll = %q, %v", b, err)
	}
}

// TestDoneContextChangesNothing: with a context already done (the gate's
// deadline passed), fs.read, fs.write and fs.delete do nothing and say why.
func TestDoneContextChangesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		run  func(sb *sandbox) (map[string]string, error)
	}{
		{"read", func(sb *sandbox) (map[string]string, error) { return sb.read(ctx, acme, "a.txt") }},
		{"write", func(sb *sandbox) (map[string]string, error) { return sb.write(ctx, acme, "a.txt", "new") }},
		{"write a new file", func(sb *sandbox) (map[string]string, error) { return sb.write(ctx, acme, "d/b.txt", "new") }},
		{"delete", func(sb *sandbox) (map[string]string, error) { return sb.remove(ctx, acme, "a.txt") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			if _, err := w.sb.write(t.Context(), acme, "a.txt", "old"); err != nil {
				t.Fatal(err)
			}
			if out, err := tt.run(w.sb); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s = %v, %v; want context.Canceled", tt.name, out, err)
			}
			w.unchanged(t)
		})
	}
}

// unchanged checks acme's sandbox holds only a.txt, reading "old".
func (w *world) unchanged(t *testing.T) {
	t.Helper()
	dir := filepath.Join(w.sb.dir, "acme")
	if b, err := os.ReadFile(filepath.Join(dir, "a.txt")); err != nil || string(b) != "old" {
		t.Fatalf("a.txt = %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("sandbox has %d entries, want only a.txt", len(entries))
	}
}

// doneLater is a context whose Err reports done from its second call on.
type doneLater struct {
	context.Context
	calls int
}

func (c *doneLater) Err() error {
	if c.calls++; c.calls > 1 {
		return context.DeadlineExceeded
	}
	return nil
}

// TestWriteChecksContextBeforeRename: a deadline that passes while fs.write
// writes its temporary file stops it before the rename, its commit point:
// the target keeps its old content and no temporary file is left.
func TestWriteChecksContextBeforeRename(t *testing.T) {
	w := newWorld(t)
	if _, err := w.sb.write(t.Context(), acme, "a.txt", "old"); err != nil {
		t.Fatal(err)
	}
	ctx := &doneLater{Context: t.Context()}
	if out, err := w.sb.write(ctx, acme, "a.txt", "new"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write = %v, %v; want context.DeadlineExceeded", out, err)
	}
	if ctx.calls < 2 {
		t.Fatalf("context checked %d times, want before the start and before the rename", ctx.calls)
	}
	w.unchanged(t)
}

// TestErrorsNameNoHostPath: errors end up in stored results the tenant
// reads; they name the sandbox-relative target, never the host path of the
// sandbox (os.File methods, os.OpenRoot and os.MkdirAll put it in their
// *PathError), whether the sandbox dir is absolute or relative to the
// working directory (serve --data-dir ./data).
func TestErrorsNameNoHostPath(t *testing.T) {
	t.Run("absolute", func(t *testing.T) { errorsNameNoHostPath(t, newWorld(t)) })
	t.Run("relative", func(t *testing.T) {
		w := newWorld(t)
		base := filepath.Dir(w.sb.dir)
		t.Chdir(base)
		w.sb.dir = "host-sandbox-dir"
		errorsNameNoHostPath(t, w)
	})
}

func errorsNameNoHostPath(t *testing.T, w *world) {
	for _, f := range []string{"f.txt", "d/g.txt"} {
		if _, err := w.sb.write(t.Context(), acme, f, "x"); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(w.sb.dir, "acme")
	if err := syscall.Mkfifo(filepath.Join(dir, "p"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(w.secret, filepath.Join(dir, "hl.txt")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func() (map[string]string, error)
		want error
	}{
		{"read a directory", func() (map[string]string, error) { return w.sb.read(t.Context(), acme, "d") }, ErrNotRegular},
		{"read a missing file", func() (map[string]string, error) { return w.sb.read(t.Context(), acme, "nope") }, os.ErrNotExist},
		{"read under a file", func() (map[string]string, error) { return w.sb.read(t.Context(), acme, "f.txt/x") }, syscall.ENOTDIR},
		{"read a fifo", func() (map[string]string, error) { return w.sb.read(t.Context(), acme, "p") }, ErrNotRegular},
		{"read a hard link", func() (map[string]string, error) { return w.sb.read(t.Context(), acme, "hl.txt") }, ErrHardLink},
		{"read from a tenant with no sandbox", func() (map[string]string, error) { return w.sb.read(t.Context(), beta, "f.txt") }, os.ErrNotExist},
		{"delete from a tenant with no sandbox", func() (map[string]string, error) { return w.sb.remove(t.Context(), beta, "f.txt") }, os.ErrNotExist},
		{"write onto a directory", func() (map[string]string, error) { return w.sb.write(t.Context(), acme, "d", "x") }, ErrNotRegular},
		{"write onto a fifo", func() (map[string]string, error) { return w.sb.write(t.Context(), acme, "p", "x") }, ErrNotRegular},
		{"write onto a hard link", func() (map[string]string, error) { return w.sb.write(t.Context(), acme, "hl.txt", "x") }, ErrHardLink},
		{"delete a fifo", func() (map[string]string, error) { return w.sb.remove(t.Context(), acme, "p") }, ErrNotRegular},
		{"delete a hard link", func() (map[string]string, error) { return w.sb.remove(t.Context(), acme, "hl.txt") }, ErrHardLink},
		{"write under a file", func() (map[string]string, error) { return w.sb.write(t.Context(), acme, "f.txt/x", "x") }, nil},
		{"delete a directory", func() (map[string]string, error) { return w.sb.remove(t.Context(), acme, "d") }, ErrNotRegular},
		{"delete a missing file", func() (map[string]string, error) { return w.sb.remove(t.Context(), acme, "nope") }, os.ErrNotExist},
	}
	abs, err := filepath.Abs(w.sb.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.run()
			if err == nil {
				t.Fatalf("succeeded: %v", out)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			msg := err.Error()
			for _, host := range []string{filepath.Dir(abs), w.sb.dir, "secret"} {
				if strings.Contains(msg, host) {
					t.Fatalf("error carries a host path (%s): %q", host, msg)
				}
			}
			t.Log(err)
		})
	}
}

// TestHideRewritesHostPaths: the errors of an *os.File a root opened (a
// write that fails on a full disk, say: not provoked here) name the file by
// its host path; hide makes it relative to the tenant's sandbox, drops
// other host paths and keeps the cause.
func TestHideRewritesHostPaths(t *testing.T) {
	tests := []struct {
		err       error
		dir, want string
	}{
		{&os.PathError{Op: "write", Path: "data/sandbox/acme/a.txt.exoarmur-tmp", Err: syscall.ENOSPC}, "data/sandbox/acme", "write a.txt.exoarmur-tmp: no space left on device"},
		{&os.PathError{Op: "read", Path: "/srv/x/sandbox/acme/adir", Err: syscall.EISDIR}, "/srv/x/sandbox/acme", "read adir: is a directory"},
		{&os.PathError{Op: "open", Path: "/srv/x/sandbox/acme", Err: syscall.ENOSPC}, "/srv/x/sandbox/acme", "open: no space left on device"},
		{&os.PathError{Op: "open", Path: "/etc/elsewhere", Err: syscall.ENOSPC}, "/srv/x/sandbox/acme", "open: no space left on device"},
		{fmt.Errorf("wrapped: %w", &os.PathError{Op: "sync", Path: "./data/sandbox/acme/d/f", Err: syscall.EIO}), "data/sandbox/acme", "sync d/f: input/output error"},
		{&os.LinkError{Op: "rename", Old: "/srv/x/sandbox/acme/a.tmp", New: "/srv/x/sandbox/acme/a", Err: syscall.EEXIST}, "/srv/x/sandbox/acme", "rename a.tmp a: file exists"},
		{&os.PathError{Op: "openat", Path: "f.txt/x", Err: syscall.ENOTDIR}, "data/sandbox/acme", "openat f.txt/x: not a directory"},
	}
	for _, tt := range tests {
		got := hide(tt.err, tt.dir)
		if got.Error() != tt.want {
			t.Errorf("hide(%q) = %q, want %q", tt.err, got, tt.want)
		}
		var errno syscall.Errno
		if !errors.As(tt.err, &errno) || !errors.Is(got, errno) {
			t.Errorf("hide(%q) lost its cause", tt.err)
		}
	}
}
