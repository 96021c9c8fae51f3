package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// readers are the commands that read a store and never create one.
var readers = [][]string{
	{"audit", "verify", "--tenant", "acme"},
	{"audit", "export", "--tenant", "acme"},
	{"replay"},
	{"replay", "--tenant", "acme"},
	{"keys", "list"},
	{"keys", "revoke", "key_0123456789abcdef"},
}

// TestReadersCreateNoStore: pointed at a missing or empty directory (or the
// default ./data, missing), a reading command fails with "no store at DIR"
// (exit 1) and the directory is as it was: absent, or empty.
func TestReadersCreateNoStore(t *testing.T) {
	for _, args := range readers {
		missing := filepath.Join(t.TempDir(), "data")
		code, out, stderr := run(append(args, "--data-dir", missing)...)
		if code != 1 || out != "" || !strings.Contains(stderr, "no store at "+missing+": the directory does not exist; nothing was created") {
			t.Errorf("%v on a missing dir: exit %d\n%s%s", args, code, out, stderr)
		}
		if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v created %s: %v", args, missing, err)
		}

		empty := t.TempDir()
		code, out, stderr = run(append(args, "--data-dir", empty)...)
		if code != 1 || out != "" || !strings.Contains(stderr, "no store at "+empty+": the directory holds no JetStream store") {
			t.Errorf("%v on an empty dir: exit %d\n%s%s", args, code, out, stderr)
		}
		if ents, err := os.ReadDir(empty); err != nil || len(ents) != 0 {
			t.Errorf("%v wrote into the empty dir %s: %v %v", args, empty, ents, err)
		}
	}
	t.Chdir(t.TempDir())
	for _, args := range readers {
		if code, _, stderr := run(args...); code != 1 || !strings.Contains(stderr, "no store at ./data:") {
			t.Errorf("%v with the default data dir: exit %d\n%s", args, code, stderr)
		}
		if _, err := os.Stat("data"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%v created ./data: %v", args, err)
		}
	}
}

// TestReadersOnAnEmptyNATS: with --nats-url, a NATS server without
// ExoArmur's streams is no store either, and it is left without them.
func TestReadersOnAnEmptyNATS(t *testing.T) {
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: t.TempDir(), Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	for _, args := range readers {
		code, out, stderr := run(append(args, "--nats-url", url)...)
		if code != 1 || out != "" || !strings.Contains(stderr, "no store at "+url+": the NATS server holds no ExoArmur audit stream") {
			t.Errorf("%v on an empty NATS: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	if err := natsstore.CheckExists(context.Background(), natsstore.Config{NATSURL: url}, 3*time.Second); !errors.Is(err, natsstore.ErrNoStore) {
		t.Fatalf("after the readers, the NATS server holds a store: %v", err)
	}
}

// TestAuditVerifyOfATenantWithoutRecords: a tenant with no records is named
// as such (exit 1), with the tenants there are, not reported as a chain
// that fails to verify; a tenant with records verifies.
func TestAuditVerifyOfATenantWithoutRecords(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := run("demo", "--keep", dir); code != 0 {
		t.Fatalf("demo: exit %d\n%s", code, stderr)
	}
	data := filepath.Join(dir, "data")
	for _, sub := range []string{"verify", "export"} {
		code, out, stderr := run("audit", sub, "--data-dir", data, "--tenant", "acne")
		if code != 1 || out != "" || !strings.Contains(stderr, "no records for tenant acne (tenants with records: acme, system)") || strings.Contains(stderr, "verify (") {
			t.Errorf("audit %s of a tenant without records: exit %d\n%s%s", sub, code, out, stderr)
		}
	}
	if code, out, stderr := run("audit", "verify", "--data-dir", data, "--tenant", "acme", "--json"); code != 0 || !strings.Contains(out, `"pass":true`) {
		t.Errorf("audit verify of acme: exit %d\n%s%s", code, out, stderr)
	}
	// A store without any audit record (keys create writes none).
	keys := t.TempDir()
	if code, _, stderr := run("keys", "create", "--data-dir", keys, "--name", "a", "--role", "agent", "--tenant", "acme", "--actions", "A0"); code != 0 {
		t.Fatalf("keys create: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := run("audit", "verify", "--data-dir", keys, "--tenant", "acme"); code != 1 || !strings.Contains(stderr, "no records for tenant acme (the store holds no audit records)") {
		t.Errorf("audit verify on a store without records: exit %d\n%s", code, stderr)
	}
}
