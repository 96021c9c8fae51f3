package natsstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// The adapter implements what the gate declares it needs of the work
// queue (WorkConsumer and Delivery are the same types on both sides).
var _ gate.WorkQueue = (*natsstore.Queue)(nil)

// fetch collects one Fetch of up to n deliveries.
func fetch(t *testing.T, c natsstore.Consumer, n int, wait time.Duration) []natsstore.Delivery {
	t.Helper()
	items, err := c.Fetch(n, wait)
	if err != nil {
		t.Fatal(err)
	}
	var out []natsstore.Delivery
	for d := range items {
		out = append(out, d)
	}
	return out
}

// one is the data of the single delivery in ds.
func one(t *testing.T, ds []natsstore.Delivery, want string) natsstore.Delivery {
	t.Helper()
	if len(ds) != 1 || string(ds[0].Data()) != want {
		got := []string{}
		for _, d := range ds {
			got = append(got, string(d.Data()))
		}
		t.Fatalf("delivered %q, want just %q", got, want)
	}
	return ds[0]
}

// TestQueueConformance is the contract of gate.WorkQueue, run on the work
// queue of a real embedded NATS: a message ID is queued once, an
// acknowledged item is gone, an unsettled or refused one comes again
// (after the ack wait, or the refusal's delay) at most maxDeliver times,
// and a terminated one never.
func TestQueueConformance(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	q := st.Work
	subj := tenant.WorkSubject(tenant.MustParse("acme"))
	const ackWait, maxDeliver = time.Second, 3
	c, err := q.Consumer(ctx, tenant.WorkConsumer, tenant.WorkSubjects, ackWait, maxDeliver)
	if err != nil {
		t.Fatal(err)
	}
	// Binding again (another node, a restart) is the same consumer.
	if _, err := q.Consumer(ctx, tenant.WorkConsumer, tenant.WorkSubjects, ackWait, maxDeliver); err != nil {
		t.Fatalf("binding the consumer again: %v", err)
	}
	enqueue := func(data, id string) {
		t.Helper()
		if err := q.Enqueue(ctx, subj, []byte(data), id); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("dedupe and ack", func(t *testing.T) {
		enqueue("a", "in_a")
		enqueue("a again", "in_a") // the same ID: stored once
		// All there is, fetched within less than the ack wait.
		if err := one(t, fetch(t, c, 16, ackWait/2), "a").Ack(); err != nil {
			t.Fatal(err)
		}
		if ds := fetch(t, c, 1, 300*time.Millisecond); len(ds) != 0 {
			t.Fatalf("after the ack, %d more deliveries", len(ds))
		}
		info, err := q.Stream().Info(ctx)
		if err != nil || info.State.Msgs != 0 {
			t.Fatalf("the work queue holds %d messages after the ack (%v), want 0", info.State.Msgs, err)
		}
	})

	t.Run("nak with a delay", func(t *testing.T) {
		enqueue("b", "in_b")
		if err := one(t, fetch(t, c, 1, time.Second), "b").Nak(200 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		d := one(t, fetch(t, c, 1, 3*time.Second), "b")
		if waited := time.Since(start); waited < 150*time.Millisecond {
			t.Fatalf("delivered again after %s, before the nak's 200ms delay", waited)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("redelivery after the ack wait, then term", func(t *testing.T) {
		enqueue("c", "in_c")
		one(t, fetch(t, c, 1, time.Second), "c") // not settled
		start := time.Now()
		d := one(t, fetch(t, c, 1, 3*ackWait), "c")
		if waited := time.Since(start); waited < ackWait/2 {
			t.Fatalf("an unsettled delivery came again after %s, ack wait %s", waited, ackWait)
		}
		if err := d.Term(); err != nil {
			t.Fatal(err)
		}
		if ds := fetch(t, c, 1, ackWait+500*time.Millisecond); len(ds) != 0 {
			t.Fatalf("a terminated item was delivered again: %d", len(ds))
		}
	})

	t.Run("at most maxDeliver deliveries", func(t *testing.T) {
		enqueue("d", "in_d")
		n := 0
		for {
			ds := fetch(t, c, 1, time.Second)
			if len(ds) == 0 {
				break
			}
			n++
			if err := one(t, ds, "d").Nak(0); err != nil {
				t.Fatal(err)
			}
			if n > maxDeliver {
				break
			}
		}
		if n != maxDeliver {
			t.Fatalf("delivered %d times, want maxDeliver = %d", n, maxDeliver)
		}
	})
}
