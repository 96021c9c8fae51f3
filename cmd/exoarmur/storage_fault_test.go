package main_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// rootTestsEnv set to "require" (CI sets it: .ci/run) turns the skip of a
// root-only test run by another user into a failure.
const rootTestsEnv = "EXOARMUR_ROOT_TESTS"

// requireRoot skips a test that needs root (mounting file systems) when
// the suite runs as another user, and says why; with
// EXOARMUR_ROOT_TESTS=require it fails instead, so CI cannot skip it
// silently.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := fmt.Sprintf("needs root to %s; running as uid %d (run the suite as root, as CI does)", why, os.Geteuid())
	if os.Getenv(rootTestsEnv) == "require" {
		t.Fatalf("%s, and %s=require", msg, rootTestsEnv)
	}
	t.Skip("skipped: " + msg)
}

// mountTmpfs mounts a tmpfs of size MiB on a fresh directory and unmounts
// it when the test ends. It needs root (requireRoot); as root, a failed
// mount fails the test.
func mountTmpfs(t *testing.T, sizeMiB int) string {
	t.Helper()
	requireRoot(t, "mount a tmpfs (the storage fault tests fill it and remount it read-only)")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMiB), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s (the storage fault tests need root): %v\n%s", dir, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func remount(t *testing.T, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v\n%s", dir, mode, err, out)
	}
}

// fill writes zeros to a file on dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := 0; i < 4096; i++ {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatalf("fill: %v", err)
		}
	}
	t.Fatal("fill: the file system never filled up")
	return ""
}

// proposeAll proposes n intents and returns the IDs acknowledged with 201,
// the statuses of the refusals (never a 2xx other than 201) and their error
// codes ("" for a refusal whose body is not the API's).
func proposeAll(t *testing.T, srv *server, key, prefix string, n int) (acked []string, refused map[int]int, codes map[string]int) {
	t.Helper()
	refused, codes = map[int]int{}, map[string]int{}
	c := srv.client(key)
	for i := range n {
		v, created, err := c.Propose(t.Context(), "acme", contract.IntentRequest{
			Action: "fs.read", Target: "x.txt", IdempotencyKey: fmt.Sprintf("%s-%03d", prefix, i),
			Justification: strings.Repeat("fill the disk ", 40),
		})
		switch e := refusal(err); {
		case err == nil && created:
			acked = append(acked, v.Intent.ID)
		case e.Status >= 500:
			refused[e.Status]++
			codes[e.Code]++
		default:
			t.Fatalf("propose %s-%03d: unexpected created %v, %v", prefix, i, created, err)
		}
	}
	return acked, refused, codes
}

// readyz is the status GET /readyz answers (200 ready, the refusal's status
// otherwise), -1 when the server gives no answer.
func readyz(t testing.TB, addr string) int {
	t.Helper()
	err := newClient(t, addr, "").Ready(t.Context())
	if err == nil {
		return http.StatusOK
	}
	if e := refusal(err); e.Status != 0 {
		return e.Status
	}
	return -1
}

// checkAcked restarts nothing; it asserts every acknowledged intent is
// readable and the tenant's chain verifies.
func checkAcked(t *testing.T, srv *server, key, admin string, acked []string) {
	t.Helper()
	c := srv.client(key)
	for _, id := range acked {
		if v, err := c.GetIntent(t.Context(), "acme", id); err != nil {
			t.Fatalf("acknowledged intent %s lost: %v %+v", id, err, v)
		}
	}
	if rep, err := srv.client(admin).AuditVerify(t.Context(), "acme"); err != nil || !rep.Pass {
		t.Fatalf("chain after the fault: %v %+v", err, rep)
	}
}

// TestDiskFull: the data dir's file system fills up under a running server.
// Writes are refused with 503 store_unavailable (never acknowledged; the
// first waits for the store's timeout, the rest are refused at once),
// /readyz turns not ready, the log says what happened and what to do; once
// space is freed and the server restarted, everything acknowledged is
// there, the chain verifies, and writes work again.
func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 48)
	dataDir := filepath.Join(mnt, "data")
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, adminKeys[dataDir])

	before, refused, _ := proposeAll(t, srv, key, "before", 5)
	if len(refused) != 0 {
		t.Fatalf("refusals before the disk filled: %v", refused)
	}
	filler := fill(t, mnt)
	during, refused, codes := proposeAll(t, srv, key, "full", 10)
	if refused[http.StatusServiceUnavailable] == 0 || len(refused) != 1 || len(codes) != 1 || codes["store_unavailable"] == 0 {
		t.Fatalf("with the disk full: acknowledged %d, refused %v with codes %v; want 503 store_unavailable only\n%s", len(during), refused, codes, srv.logs.String())
	}
	if got := readyz(t, addr); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the disk full = %d, want 503", got)
	}
	logs := srv.logs.String()
	if !strings.Contains(logs, "no space left on device") || !strings.Contains(logs, "the store can no longer persist writes") {
		t.Fatalf("the server's log does not say the disk is full and what to do:\n%s", logs)
	}
	t.Logf("disk full: %d proposals acknowledged before the first refusal, %d refused", len(during), refused[503])

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// A stream that failed a write acknowledges nothing until a restart,
	// so the server keeps saying so rather than timing out write by write.
	time.Sleep(time.Second)
	if got := readyz(t, addr); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after freeing space without a restart = %d, want 503", got)
	}
	if _, refused, _ := proposeAll(t, srv, key, "freed", 2); refused[503] != 2 {
		t.Fatalf("writes after freeing space without a restart: refused %v, want 503s", refused)
	}
	srv.kill()
	srv = startServer(t, dataDir, addr)
	checkAcked(t, srv, key, adminKeys[dataDir], append(before, during...))
	after, refused, _ := proposeAll(t, srv, key, "after", 3)
	if len(refused) != 0 || len(after) != 3 {
		t.Fatalf("after freeing space: acknowledged %d, refused %v", len(after), refused)
	}
}

// TestReadOnlyDataDir: a server refuses to start on a read-only data dir,
// exits non-zero with an error naming it, and changes nothing; once the
// data dir is writable again it starts on the same data and everything
// stored before is there. (A data dir turning read-only under a running
// server cannot be staged here: Linux refuses to remount a file system
// read-only while files on it are open for writing. The server then sees
// failed writes, the path TestDiskFull exercises.)
func TestReadOnlyDataDir(t *testing.T) {
	mnt := mountTmpfs(t, 64)
	dataDir := filepath.Join(mnt, "data")
	key := createKey(t, dataDir)
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, adminKeys[dataDir])
	before, refused, _ := proposeAll(t, srv, key, "rw", 5)
	if len(refused) != 0 {
		t.Fatalf("refusals on a writable data dir: %v", refused)
	}
	srv.kill()

	remount(t, mnt, "ro")
	cmd := exec.Command(binary(t), "serve", "--data-dir", dataDir, "--listen", freePort(t))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("serve on a read-only data dir did not exit within 30s")
	}
	if err == nil || !strings.Contains(string(out), dataDir) || !strings.Contains(string(out), "read-only file system") {
		t.Fatalf("serve on a read-only data dir: err=%v, output:\n%s", err, out)
	}
	t.Logf("serve on a read-only data dir: %v: %s", err, strings.TrimSpace(string(out)))

	remount(t, mnt, "rw")
	srv = startServer(t, dataDir, addr)
	checkAcked(t, srv, key, adminKeys[dataDir], before)
	if after, refused, _ := proposeAll(t, srv, key, "again", 3); len(refused) != 0 || len(after) != 3 {
		t.Fatalf("after remounting read-write: acknowledged %d, refused %v", len(after), refused)
	}
}
