package natsstore

import (
	"context"
	"errors"
	"testing"
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
