package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestPut: the conditions, the rollup and the TTL of Put on a real bucket
// (the intents bucket, whose stream allows message TTLs).
func TestPut(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const key = "acme.k"
	put := func(data string, o PutOptions) (uint64, error) {
		return Put(ctx, s.JS, tenant.IntentsBucket, key, []byte(data), o)
	}
	r1, err := put("one", PutOptions{Create: true})
	if err != nil {
		t.Fatalf("create on an empty key: %v", err)
	}
	if _, err := put("again", PutOptions{Create: true}); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("create on a key with a value = %v, want ErrKeyExists", err)
	}
	r2, err := put("two", PutOptions{Revision: r1})
	if err != nil {
		t.Fatalf("put over the current revision: %v", err)
	}
	if _, err := put("stale", PutOptions{Revision: r1}); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("put over a stale revision = %v, want ErrKeyExists", err)
	}
	if _, err := put("x", PutOptions{Create: true, Revision: r2}); err == nil {
		t.Fatal("Create with a Revision accepted")
	}
	if _, err := put("final", PutOptions{Revision: r2, Rollup: true, TTL: time.Second}); err != nil {
		t.Fatalf("final put: %v", err)
	}
	hist, err := s.Intents.History(ctx, key)
	if err != nil || len(hist) != 1 || string(hist[0].Value()) != "final" {
		t.Fatalf("history after a rollup = %d entries, %v; want only the final value", len(hist), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Intents.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the value did not expire within 10s of its 1s TTL (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
