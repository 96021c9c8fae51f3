package main_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlocks returns the ```sh blocks of README.md's section, in order.
func readmeBlocks(t *testing.T, section string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	in := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## "+section
		case !in:
		case cur == nil && line == "```sh":
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("README.md has no ```sh block in section %q", section)
	}
	return blocks
}

// TestReadmeRunningIt runs every shell block of the README's "Running it"
// section, in order, in one shell on a fresh directory, as a newcomer
// pasting them from a fresh clone would: it must reach an executed, approved
// and audited A1 write. What the test provides: `make build` is the binary
// this test built (bin/exoarmur), the server's port is a free one instead
// of 8080, and a shell trap ends the server if a block fails.
func TestReadmeRunningIt(t *testing.T) {
	blocks := readmeBlocks(t, "Running it")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary(t), filepath.Join(dir, "bin", "exoarmur")); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	script := `set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
make() { if [ "$*" != build ]; then echo "readme test: only make build is provided" >&2; return 1; fi; }
` + strings.ReplaceAll(strings.Join(blocks, "\n"), "127.0.0.1:8080", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	// Its own process group, ended whole: a server the script started in
	// the background never outlives the test, even when a block hangs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("the README's blocks failed: %v\nstdout:\n%s\nstderr:\n%s\nserve.log:\n%s", err, out.String(), errb.String(), log)
	}
	for _, want := range []string{
		`"approval_required"`, // the execute before the approval
		`"status":"succeeded"`,
		"hi",                       // the file's content
		`"pass":true`,              // the audit chain verifies
		"refused, as it should be", // the export cut before its checkpoint
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the README's run printed no %s:\n%s\nstderr:\n%s", want, out.String(), errb.String())
		}
	}
	if !strings.Contains(errb.String(), "created the first admin") {
		t.Errorf("init did not say what it created:\n%s", errb.String())
	}
}

// TestKeysCreateWhileServing: keys create on a data dir a running server
// holds goes through that server's API with the admin key in
// EXOARMUR_API_KEY, and says what to do without one; what the API cannot
// carry (another owner, a certificate principal) is refused, not dropped.
func TestKeysCreateWhileServing(t *testing.T) {
	dataDir := t.TempDir()
	admin := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	addr := freePort(t)
	startServer(t, dataDir, addr)
	keys := func(apiKey string, args ...string) (string, string, error) {
		cmd := exec.Command(binary(t), append([]string{"keys", "create", "--data-dir", dataDir}, args...)...)
		cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+apiKey, "EXOARMUR_SERVER=")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	bot := []string{"--name", "bot", "--role", "agent", "--tenant", "acme", "--actions", "*"}
	if _, stderr, err := keys("", bot...); err == nil || !strings.Contains(stderr, "EXOARMUR_API_KEY") {
		t.Fatalf("without an API key: %v %s, want a refusal naming EXOARMUR_API_KEY", err, stderr)
	}
	if _, stderr, err := keys(admin, append(bot, "--owner", "alice")...); err == nil || !strings.Contains(stderr, "--owner") {
		t.Fatalf("another owner through the API: %v %s, want refused", err, stderr)
	}
	if _, stderr, err := keys(admin, append(bot, "--cert-cn", "bot.example")...); err == nil || !strings.Contains(stderr, "client-certificate principals") {
		t.Fatalf("a certificate principal through the API: %v %s, want refused", err, stderr)
	}
	// Never another server than the one holding the data dir: the admin
	// key and the new key would go to the wrong deployment.
	other := freePort(t)
	if _, stderr, err := keys(admin, append(bot[:len(bot):len(bot)], "--server", "http://"+other)...); err == nil || !strings.Contains(stderr, "refusing to create the key elsewhere") {
		t.Fatalf("keys create naming another server: %v %s, want refused", err, stderr)
	}
	out, stderr, err := keys(admin, bot...)
	key := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(key, "exo_") || !strings.Contains(stderr, "through the server") {
		t.Fatalf("through the API: %v %q %s", err, out, stderr)
	}
	if _, err := newClient(t, addr, key).GetKillSwitch(context.Background(), "acme"); err == nil {
		t.Fatal("an agent key read the acme kill switch (operators only)")
	} else if !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("the new key does not authenticate: %v", err)
	}
}
