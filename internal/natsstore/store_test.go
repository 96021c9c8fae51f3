package natsstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

func TestDataDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Config{DataDir: dir}); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second Open of one data dir = %v, want ErrDataDirInUse", err)
	}
	if !a.Ready() {
		t.Fatal("store not ready")
	}
	a.Close()
	b, err := Open(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	b.Close()
}

func TestStandaloneServerAndExternalURL(t *testing.T) {
	srv, err := StartServer(ServerConfig{DataDir: t.TempDir(), Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	st, err := Open(context.Background(), Config{NATSURL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Audit == nil || st.Intents == nil || st.Idempotency == nil || st.Principals == nil {
		t.Fatal("streams and buckets not ensured")
	}
	if _, err := Open(context.Background(), Config{NATSURL: "nats://127.0.0.1:1"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open(unreachable) = %v, want ErrUnavailable", err)
	}
}

// TestArchiveUpgradedToWriteOnce: the policy archive an earlier version
// created (a plain KV bucket, history 1: its keys could be overwritten and
// deleted) is upgraded by the next unconfined Open to the write-once
// declaration; its bundles stay, a key deleted before the upgrade can be
// archived again (its delete marker was dropped), and from then on the
// server refuses overwrites and deletes.
func TestArchiveUpgradedToWriteOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := StartServer(ServerConfig{DataDir: dir, Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The earlier declaration.
	old, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: tenant.PoliciesBucket, Description: "ExoArmur policy bundles by hash (cedar source; no tenant data)", History: 1, Storage: jetstream.FileStorage, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Create(ctx, "kept", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Create(ctx, "deleted", []byte("deleted")); err != nil {
		t.Fatal(err)
	}
	if err := old.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()

	st, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	info, err := st.JS.Stream(ctx, tenant.KVStream(tenant.PoliciesBucket))
	if err != nil {
		t.Fatal(err)
	}
	if why := differs(info.CachedInfo().Config, policiesConfig(1)); why != "" {
		t.Fatalf("the archive after the upgrade: %s", why)
	}
	b := st.Policies.KeyValue()
	if e, err := b.Get(ctx, "kept"); err != nil || string(e.Value()) != "kept" {
		t.Fatalf("a bundle archived before the upgrade: %v", err)
	}
	if _, err := b.Create(ctx, "deleted", []byte("again")); err != nil {
		t.Fatalf("archive a bundle deleted before the upgrade: %v", err)
	}
	for _, key := range []string{"kept", "deleted"} {
		if _, err := b.Put(ctx, key, []byte("other")); err == nil {
			t.Errorf("overwrite of %s accepted after the upgrade", key)
		}
		if err := b.Delete(ctx, key); err == nil {
			t.Errorf("delete of %s accepted after the upgrade", key)
		}
	}
}

// TestConditionalWriteWhoseAnswerWasLost: a create whose first attempt
// landed but went unanswered (a leader change) is sent again; the retry's
// "exists" is recognised as its own write (the key holds exactly its
// value) and succeeds with that revision. A key another writer holds stays
// a conflict.
func TestConditionalWriteWhoseAnswerWasLost(t *testing.T) {
	st, err := Open(context.Background(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	b := st.Intents
	for _, c := range []struct {
		name, key   string
		theirs      []byte // held before the write, by another writer
		wantErr     error
		wantAttempt int
	}{
		{name: "own write", key: "acme.lost", wantAttempt: 2},
		{name: "another's", key: "acme.taken", theirs: []byte("theirs"), wantErr: kv.ErrExists, wantAttempt: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.theirs != nil {
				if _, err := b.Put(ctx, c.key, c.theirs, kv.PutOptions{Create: true}); err != nil {
					t.Fatal(err)
				}
			}
			attempts := 0
			rev, err := b.conditional(ctx, c.key, []byte("mine"), kv.ErrExists, func(ctx context.Context) (uint64, error) {
				attempts++
				rev, err := b.kv.Create(ctx, c.key, []byte("mine"))
				if attempts == 1 && err == nil {
					return 0, context.DeadlineExceeded // landed, answer lost
				}
				return rev, err
			})
			if !errors.Is(err, c.wantErr) || attempts < c.wantAttempt {
				t.Fatalf("conditional create = %d, %v after %d attempts; want %v", rev, err, attempts, c.wantErr)
			}
			e, gerr := b.Get(ctx, c.key)
			if c.wantErr == nil && (gerr != nil || e.Revision != rev || string(e.Value) != "mine") {
				t.Fatalf("key holds %q at %d (%v), the write answered %d", e.Value, e.Revision, gerr, rev)
			}
		})
	}
}

// TestOpenReadsMaxPayload: Open reads the server's max_payload and
// refuses one below MinMaxPayload, saying what it found, what ExoArmur
// needs and what to set; a stock server's 1 MiB and this binary's own
// servers are accepted. Nothing is declared on a server it refuses.
func TestOpenReadsMaxPayload(t *testing.T) {
	tests := []struct {
		name       string
		maxPayload int32 // 0: the embedded server's default
		refused    bool
	}{
		{"embedded default", 0, false},
		{"stock nats-server", 1 << 20, false},
		{"the minimum", MinMaxPayload, false},
		{"one byte below the minimum", MinMaxPayload - 1, true},
		{"64 KiB", 64 << 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := StartServer(ServerConfig{DataDir: t.TempDir(), MaxPayload: tt.maxPayload})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown()
			st, err := Open(context.Background(), Config{NATSURL: srv.ClientURL()})
			if tt.refused {
				if !errors.Is(err, ErrMaxPayload) {
					t.Fatalf("Open = %v, want ErrMaxPayload", err)
				}
				for _, want := range []string{srv.ClientURL(), fmt.Sprintf("at most %d bytes", tt.maxPayload), fmt.Sprintf("at least %d", MinMaxPayload), "max_payload: 1MB"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal %q does not say %q", err, want)
					}
				}
				if n := srv.GlobalAccount().JetStreamUsage().Streams; n != 0 {
					t.Errorf("a refused Open declared %d streams", n)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			want := int64(cmp.Or(tt.maxPayload, DefaultMaxPayload))
			if got := st.MaxPayload(); got != want {
				t.Fatalf("MaxPayload() = %d, want %d", got, want)
			}
		})
	}
}
