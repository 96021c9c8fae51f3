package natsstore_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// The adapter implements what the kill switches declare they need.
var (
	_ killswitch.Bucket = (*natsstore.Bucket)(nil)
	_ killswitch.Peers  = (*natsstore.Bus)(nil)
)

// next is the watch's next change, or a failure after a few seconds.
func next(t *testing.T, ch <-chan kv.Change) kv.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("the watch closed")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no change from the watch within 5s")
	}
	return kv.Change{}
}

// TestControlConformance is what killswitch.Bucket adds to kv.Bucket, a
// watch and the latest revision, run on the control bucket of a real
// embedded NATS.
func TestControlConformance(t *testing.T) {
	ctx := context.Background()
	b := openStore(t).Control

	t.Run("an empty bucket", func(t *testing.T) {
		if rev, err := b.LastRevision(ctx); err != nil || rev != 0 {
			t.Fatalf("LastRevision of an empty bucket = %d, %v", rev, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := b.Watch(wctx)
		if err != nil {
			t.Fatal(err)
		}
		if c := next(t, ch); !c.CaughtUp || c.Key != "" {
			t.Fatalf("first of an empty bucket's watch = %+v, want CaughtUp", c)
		}
	})

	rA, err := b.Put(ctx, "acme.a", []byte("a1"), kv.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "acme.b", []byte("b1"), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "acme.b", 0); err != nil {
		t.Fatal(err)
	}
	rB, err := b.LastRevision(ctx)
	if err != nil || rB <= rA {
		t.Fatalf("LastRevision after three writes = %d, %v; want after %d", rB, err, rA)
	}

	t.Run("watch: current values, caught up, then changes", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		ch, err := b.Watch(wctx)
		if err != nil {
			t.Fatal(err)
		}
		// The current state: a's value, b's deletion (its last revision,
		// the latest of the bucket), in revision order.
		if c := next(t, ch); c.Key != "acme.a" || string(c.Value) != "a1" || c.Revision != rA || c.Deleted || c.CaughtUp {
			t.Fatalf("first = %+v, want acme.a a1 at %d", c, rA)
		}
		if c := next(t, ch); c.Key != "acme.b" || !c.Deleted || c.Revision != rB {
			t.Fatalf("second = %+v, want acme.b deleted at %d", c, rB)
		}
		if c := next(t, ch); !c.CaughtUp {
			t.Fatalf("third = %+v, want CaughtUp", c)
		}
		rC, err := b.Put(ctx, "acme.c", []byte("c1"), kv.PutOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		if c := next(t, ch); c.Key != "acme.c" || string(c.Value) != "c1" || c.Revision != rC || c.Deleted {
			t.Fatalf("after a put = %+v, want acme.c c1 at %d", c, rC)
		}
		if err := b.Delete(ctx, "acme.a", rA); err != nil {
			t.Fatal(err)
		}
		c := next(t, ch)
		if c.Key != "acme.a" || !c.Deleted || c.Revision <= rC {
			t.Fatalf("after a delete = %+v, want acme.a deleted", c)
		}
		if last, err := b.LastRevision(ctx); err != nil || last != c.Revision {
			t.Fatalf("LastRevision = %d, %v; want the last change's %d", last, err, c.Revision)
		}
		// Its context ends the watch: the channel closes.
		cancel()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-deadline:
				t.Fatal("the watch did not close within 5s of its context ending")
			}
		}
	})
}

// TestBusConformance is killswitch.Peers on a real embedded NATS: what is
// published reaches the subscribers until they unsubscribe.
func TestBusConformance(t *testing.T) {
	st := openStore(t)
	got := make(chan string, 16)
	unsubscribe, err := st.Bus.Subscribe("conformance.bus", func(data []byte) { got <- string(data) })
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two"} {
		if err := st.Bus.Publish("conformance.bus", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	for len(seen) < 2 {
		select {
		case m := <-got:
			seen = append(seen, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("received %v within 5s, want [one two]", seen)
		}
	}
	if !slices.Equal(seen, []string{"one", "two"}) {
		t.Fatalf("received %v, want [one two] in order", seen)
	}
	if err := unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := st.Bus.Publish("conformance.bus", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := st.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		t.Fatalf("received %q after unsubscribing", m)
	case <-time.After(200 * time.Millisecond):
	}
}
