package natsstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// TestConformance is the contract of kv.Bucket, run on the adapter over a
// real embedded NATS: on a bucket whose stream allows message TTLs (the
// intents bucket, as Open declares it) and on a plain KV bucket
// (the key registry).
func TestConformance(t *testing.T) {
	ctx := context.Background()
	st, err := natsstore.Open(ctx, natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, c := range []struct {
		name string
		raw  jetstream.KeyValue
		ttl  bool
	}{
		{"ttl bucket", st.Intents.KeyValue(), true},
		{"plain bucket", st.Principals.KeyValue(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			conformance(t, natsstore.New(c.raw, st.JS), c.raw, c.ttl)
		})
	}
}

// conformance checks b; raw is the same bucket through JetStream, to see
// what the contract cannot (a rollup's dropped history).
func conformance(t *testing.T, b kv.Bucket, raw jetstream.KeyValue, ttl bool) {
	ctx := context.Background()
	put := func(key, v string, o kv.PutOptions) (uint64, error) { return b.Put(ctx, key, []byte(v), o) }
	get := func(key string) (string, uint64, error) {
		e, err := b.Get(ctx, key)
		if err == nil && e.Key != key {
			t.Fatalf("Get(%s) returned the entry of key %s", key, e.Key)
		}
		return string(e.Value), e.Revision, err
	}

	t.Run("get a missing key", func(t *testing.T) {
		if _, _, err := get("acme.missing"); err != kv.ErrNotFound { //nolint:errorlint // the bare sentinel is part of the contract
			t.Fatalf("Get of a missing key = %v, want kv.ErrNotFound itself", err)
		}
	})

	t.Run("create, exists", func(t *testing.T) {
		r1, err := put("acme.c", "one", kv.PutOptions{Create: true})
		if err != nil {
			t.Fatalf("create on an empty key: %v", err)
		}
		if v, rev, err := get("acme.c"); err != nil || v != "one" || rev != r1 {
			t.Fatalf("Get after create = %q rev %d, %v; want one rev %d", v, rev, err, r1)
		}
		if _, err := put("acme.c", "again", kv.PutOptions{Create: true}); !errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrConflict) {
			t.Fatalf("create on a key with a value = %v, want kv.ErrExists", err)
		}
		if v, _, _ := get("acme.c"); v != "one" {
			t.Fatalf("a refused create changed the value to %q", v)
		}
	})

	t.Run("update, conflict", func(t *testing.T) {
		r1, err := put("acme.u", "one", kv.PutOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := put("acme.u", "two", kv.PutOptions{Revision: r1})
		if err != nil || r2 <= r1 {
			t.Fatalf("update over the current revision = rev %d, %v; want a later revision than %d", r2, err, r1)
		}
		if _, err := put("acme.u", "stale", kv.PutOptions{Revision: r1}); !errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists) {
			t.Fatalf("update over a stale revision = %v, want kv.ErrConflict", err)
		}
		if v, rev, _ := get("acme.u"); v != "two" || rev != r2 {
			t.Fatalf("after a refused update: %q rev %d, want two rev %d", v, rev, r2)
		}
		if _, err := put("acme.u", "x", kv.PutOptions{Create: true, Revision: r2}); err == nil || errors.Is(err, kv.ErrConflict) {
			t.Fatalf("Create with a Revision = %v, want a usage error", err)
		}
		if _, err := put("acme.u", "x", kv.PutOptions{Create: true, Rollup: true}); err == nil || errors.Is(err, kv.ErrExists) {
			t.Fatalf("Create with a Rollup = %v, want a usage error", err)
		}
		r3, err := put("acme.u", "three", kv.PutOptions{})
		if err != nil || r3 <= r2 {
			t.Fatalf("unconditional put = rev %d, %v", r3, err)
		}
	})

	t.Run("delete with revision", func(t *testing.T) {
		r1, err := put("acme.d", "one", kv.PutOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "acme.d", r1+1000); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("delete over a wrong revision = %v, want kv.ErrConflict", err)
		}
		if v, _, err := get("acme.d"); err != nil || v != "one" {
			t.Fatalf("a refused delete removed the value: %q, %v", v, err)
		}
		if err := b.Delete(ctx, "acme.d", r1); err != nil {
			t.Fatalf("delete over the current revision: %v", err)
		}
		if _, _, err := get("acme.d"); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get of a deleted key = %v, want kv.ErrNotFound", err)
		}
		// A deleted key has no value: Create takes it again (the gate
		// releases a claim this way and a retry claims it).
		if _, err := put("acme.d", "again", kv.PutOptions{Create: true}); err != nil {
			t.Fatalf("create over a delete marker: %v", err)
		}
		if err := b.Delete(ctx, "acme.d", 0); err != nil {
			t.Fatalf("unconditional delete: %v", err)
		}
		if _, _, err := get("acme.d"); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get after an unconditional delete = %v, want kv.ErrNotFound", err)
		}
	})

	t.Run("rollup", func(t *testing.T) {
		r1, err := put("acme.r", "one", kv.PutOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := put("acme.r", "two", kv.PutOptions{Revision: r1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := put("acme.r", "stale", kv.PutOptions{Rollup: true, Revision: r1}); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("rollup over a stale revision = %v, want kv.ErrConflict", err)
		}
		r3, err := put("acme.r", "final", kv.PutOptions{Rollup: true, Revision: r2})
		if err != nil {
			t.Fatalf("rollup over the current revision: %v", err)
		}
		if v, rev, err := get("acme.r"); err != nil || v != "final" || rev != r3 {
			t.Fatalf("Get after a rollup = %q rev %d, %v", v, rev, err)
		}
		hist, err := raw.History(ctx, "acme.r")
		if err != nil || len(hist) != 1 || string(hist[0].Value()) != "final" {
			t.Fatalf("history after a rollup = %d entries, %v; want only the final value", len(hist), err)
		}
		if _, err := put("acme.r", "unconditional", kv.PutOptions{Rollup: true}); err != nil {
			t.Fatalf("unconditional rollup: %v", err)
		}
	})

	t.Run("list with a filter", func(t *testing.T) {
		for _, k := range []string{"list-a.x", "list-a.y", "list-b.x"} {
			if _, err := put(k, "v", kv.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := put("list-a.x", "v2", kv.PutOptions{}); err != nil { // a second revision: still one key
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "list-a.y", 0); err != nil {
			t.Fatal(err)
		}
		got, err := b.Keys(ctx, "list-a.*")
		if err != nil || !slices.Equal(got, []string{"list-a.x"}) {
			t.Fatalf("Keys(list-a.*) = %v, %v; want [list-a.x] (a deleted key is not listed)", got, err)
		}
		all, err := b.Keys(ctx, "")
		if err != nil || !slices.Contains(all, "list-a.x") || !slices.Contains(all, "list-b.x") || slices.Contains(all, "list-a.y") {
			t.Fatalf("Keys() = %v, %v", all, err)
		}
		if none, err := b.Keys(ctx, "nobody.*"); err != nil || none == nil || len(none) != 0 {
			t.Fatalf("Keys of no match = %#v, %v; want an empty list", none, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Keys(cctx, ""); err == nil {
			t.Fatal("Keys with an ended context returned a list")
		}
	})

	if !ttl {
		return
	}
	t.Run("ttl expiry", func(t *testing.T) {
		if _, err := put("acme.t1", "created", kv.PutOptions{Create: true, TTL: time.Second}); err != nil {
			t.Fatalf("create with a TTL: %v", err)
		}
		if _, err := put("acme.t1", "again", kv.PutOptions{Create: true, TTL: time.Second}); !errors.Is(err, kv.ErrExists) {
			t.Fatalf("create with a TTL on a key with a value = %v, want kv.ErrExists", err)
		}
		r0, err := put("acme.t2", "created", kv.PutOptions{Create: true, TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := put("acme.t2", "stale", kv.PutOptions{Revision: r0 + 1000, TTL: time.Second}); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("update with a TTL over a wrong revision = %v, want kv.ErrConflict", err)
		}
		if _, err := put("acme.t2", "updated", kv.PutOptions{Revision: r0, TTL: time.Second}); err != nil {
			t.Fatalf("update with a TTL: %v", err)
		}
		// A value written for good, then rolled up with a TTL: the TTL
		// covers all that is left.
		if _, err := put("acme.t3", "for good", kv.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := put("acme.t3", "final", kv.PutOptions{TTL: time.Second, Rollup: true}); err != nil {
			t.Fatalf("rollup with a TTL: %v", err)
		}
		for _, k := range []string{"acme.t1", "acme.t2", "acme.t3"} {
			if _, _, err := get(k); err != nil {
				t.Fatalf("%s before its TTL: %v", k, err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, k := range []string{"acme.t1", "acme.t2", "acme.t3"} {
			for {
				_, _, err := get(k)
				if errors.Is(err, kv.ErrNotFound) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s did not expire within 10s of its 1s TTL (last: %v)", k, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		// An expired key has no value: Create takes it again.
		if _, err := put("acme.t1", "recreated", kv.PutOptions{Create: true}); err != nil {
			t.Fatalf("create over an expired key: %v", err)
		}
	})
}
