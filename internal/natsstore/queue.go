// Queue (this file) is the adapter of the work queue stream: what the
// gate's approvals enqueue and its background worker consumes
// (gate.WorkQueue). The consumer and the delivery it hands out are
// interface literals named by aliases (Consumer, Delivery): the gate
// declares the same literals under its own names, which makes them the
// same types, so Queue satisfies gate.WorkQueue and this package imports
// no domain package.

package natsstore

import (
	"context"
	"iter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Queue is a JetStream work-queue stream: each message goes to one
// consumer and leaves the stream once acknowledged.
type Queue struct {
	s  jetstream.Stream
	js jetstream.Publisher // the library's own interface, so that tools/inventory sees the writes
}

// NewQueue returns the adapter of work-queue stream s; js publishes to it.
func NewQueue(s jetstream.Stream, js jetstream.Publisher) *Queue {
	return &Queue{s: s, js: js}
}

// Stream is the JetStream stream under the adapter, for what the domain
// never does (tests that inspect the queue).
func (q *Queue) Stream() jetstream.Stream { return q.s }

// Enqueue stores data on subject with message ID id: another Enqueue of
// id within the stream's duplicate window (Open: 10 minutes) stores
// nothing and succeeds.
func (q *Queue) Enqueue(ctx context.Context, subject string, data []byte, id string) error {
	_, err := q.js.Publish(ctx, subject, data, jetstream.WithMsgID(id))
	return err
}

// Consumer creates (or updates) the durable consumer name on the subjects
// matching filter and binds it. Every process that binds the same name
// shares it: each message goes to one of them. A delivery that is not
// settled within ackWait is delivered again, and a message is delivered
// at most maxDeliver times.
func (q *Queue) Consumer(ctx context.Context, name, filter string, ackWait time.Duration, maxDeliver int) (Consumer, error) {
	c, err := q.s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		FilterSubject: filter,
	})
	if err != nil {
		return nil, err
	}
	return consumer{c}, nil
}

// Consumer hands out a queue's messages.
type Consumer = interface {
	// Fetch asks for up to n messages and yields each as it arrives,
	// waiting up to wait in all. A delivery the caller does not settle
	// (or leaves unread by stopping early) is delivered again after the
	// consumer's ack wait.
	Fetch(n int, wait time.Duration) (iter.Seq[Delivery], error)
}

// Delivery is one delivered message; settle it once.
type Delivery = interface {
	// Data is the message as stored.
	Data() []byte
	// Ack settles it: done, never delivered again.
	Ack() error
	// Nak asks for it again after delay (within the delivery bound).
	Nak(delay time.Duration) error
	// Term settles it for good without success: never delivered again.
	Term() error
}

type consumer struct{ c jetstream.Consumer }

func (c consumer) Fetch(n int, wait time.Duration) (iter.Seq[Delivery], error) {
	batch, err := c.c.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	return func(yield func(Delivery) bool) {
		for m := range batch.Messages() {
			if !yield(delivery{m}) {
				return
			}
		}
	}, nil
}

type delivery struct{ m jetstream.Msg }

func (d delivery) Data() []byte                  { return d.m.Data() }
func (d delivery) Ack() error                    { return d.m.Ack() }
func (d delivery) Nak(delay time.Duration) error { return d.m.NakWithDelay(delay) }
func (d delivery) Term() error                   { return d.m.Term() }
