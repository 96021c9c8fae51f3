package natsstore

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
