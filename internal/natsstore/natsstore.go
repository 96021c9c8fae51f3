// Package natsstore is the store adapter, the one package that imports
// NATS: it implements what the domain packages declare they need of the
// store on JetStream and translates JetStream's errors to the sentinels of
// internal/kv, here and nowhere else. Bucket (this file) is the key-value
// contract (kv.Bucket) on a JetStream KV bucket, which the gate's intents
// and idempotency ledger, the approvals and the key registry hold; with
// Watch and LastRevision (control.go) it is also the kill switches'
// control bucket, and Bus carries their propagation acknowledgements.
// Stream (audit.go) is the audit stream under audit.Log, Queue (queue.go)
// the gate's work queue. The interfaces are declared where they are used
// (kv.Bucket, audit.Stream, killswitch.Bucket and killswitch.Peers,
// gate.WorkQueue): this package imports none of those domain packages.
// Open (store.go) connects, ensures the streams and buckets (declare.go:
// created or updated only when missing or different) and hands them out
// through these adapters.
package natsstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Bucket is a kv.Bucket on a JetStream KV bucket.
type Bucket struct {
	kv jetstream.KeyValue
	// js publishes the writes the KV API cannot express (a TTL on an
	// update, a rollup). It is the library's jetstream.Publisher, not a
	// narrower interface of our own, so that tools/inventory sees these
	// calls as the JetStream writes they are.
	js jetstream.Publisher
	// stream is the bucket's stream, for Last (WithStream).
	stream jetstream.Stream
	bucket string
}

var _ kv.Bucket = (*Bucket)(nil)

// WithStream gives the adapter its bucket's stream, named bucket, which
// Last reads.
func (b *Bucket) WithStream(bucket string, st jetstream.Stream) *Bucket {
	b.bucket, b.stream = bucket, st
	return b
}

// Last returns the value written last, in the bucket's order of writes,
// among the keys matching filter (tokens separated by dots, * matches
// one, > the rest): one request however many keys match.
// kv.ErrNotFound when none does. The bucket must have been given its
// stream (WithStream).
func (b *Bucket) Last(ctx context.Context, filter string) (kv.Entry, error) {
	if b.stream == nil {
		return kv.Entry{}, errors.New("natsstore: Last needs the bucket's stream")
	}
	prefix := "$KV." + b.bucket + "."
	m, err := retry(ctx, func(ctx context.Context, _ bool) (*jetstream.RawStreamMsg, error) {
		return b.stream.GetLastMsgForSubject(ctx, prefix+filter)
	})
	if err != nil {
		return kv.Entry{}, translate(err, nil)
	}
	if op := m.Header.Get(kvOperation); op != "" {
		return kv.Entry{}, kv.ErrNotFound
	}
	return kv.Entry{Key: m.Subject[len(prefix):], Value: m.Data, Revision: m.Sequence}, nil
}

// New returns the adapter of bucket b; js publishes its TTL and rollup
// writes (their stream must allow message TTLs for a TTL: Open's
// intents, idempotency and approvals buckets do).
func New(b jetstream.KeyValue, js jetstream.Publisher) *Bucket {
	return &Bucket{kv: b, js: js}
}

// KeyValue is the JetStream bucket under the adapter, for what the domain
// never does (tests that inspect a record's raw form and history).
func (b *Bucket) KeyValue() jetstream.KeyValue { return b.kv }

// Get returns key's current value; kv.ErrNotFound when it has none (a
// delete marker or an expired value reads as none).
func (b *Bucket) Get(ctx context.Context, key string) (kv.Entry, error) {
	e, err := retry(ctx, func(ctx context.Context, _ bool) (jetstream.KeyValueEntry, error) { return b.kv.Get(ctx, key) })
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return kv.Entry{}, kv.ErrNotFound // the bare sentinel: a lookup that misses allocates nothing
		}
		return kv.Entry{}, err
	}
	return kv.Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

// Put writes value under o's conditions. What the KV API expresses goes
// through it (create, also over a delete marker and with a TTL; update over
// a revision; plain put); a TTL on any other write, and a rollup, are
// published on the bucket's subject as the KV API would, with the headers
// it has no option for.
func (b *Bucket) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	switch {
	case o.Create && o.Revision != 0:
		return 0, errors.New("natsstore: put: Create and Revision exclude each other")
	case o.Create && o.Rollup:
		return 0, errors.New("natsstore: put: Create and Rollup exclude each other")
	case o.Create:
		return b.conditional(ctx, key, value, kv.ErrExists, func(ctx context.Context) (uint64, error) {
			if o.TTL > 0 {
				return b.kv.Create(ctx, key, value, jetstream.KeyTTL(o.TTL))
			}
			return b.kv.Create(ctx, key, value)
		})
	case o.Rollup || o.TTL > 0:
		return b.conditional(ctx, key, value, kv.ErrConflict, func(ctx context.Context) (uint64, error) { return b.publish(ctx, key, value, o) })
	case o.Revision != 0:
		return b.conditional(ctx, key, value, kv.ErrConflict, func(ctx context.Context) (uint64, error) { return b.kv.Update(ctx, key, value, o.Revision) })
	default:
		rev, err := retry(ctx, func(ctx context.Context, _ bool) (uint64, error) { return b.kv.Put(ctx, key, value) })
		return rev, translate(err, nil)
	}
}

// conditional runs a write that a condition guards (create, or over a
// revision), retried across a leader change (retry): a retry refused by
// the condition (cas) is the first attempt's own write when the key holds
// exactly value (ownWrite), and succeeds with its revision.
func (b *Bucket) conditional(ctx context.Context, key string, value []byte, cas error, write func(context.Context) (uint64, error)) (uint64, error) {
	return retry(ctx, func(actx context.Context, again bool) (uint64, error) {
		rev, err := write(actx)
		err = translate(err, cas)
		if again && errors.Is(err, cas) {
			if rev, ok := b.ownWrite(ctx, key, value); ok {
				return rev, nil
			}
		}
		return rev, err
	})
}

// publish writes a value with a TTL or a rollup, conditioned on o.Revision.
func (b *Bucket) publish(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	if b.js == nil {
		return 0, errors.New("natsstore: put: a TTL or a rollup needs JetStream (New's js)")
	}
	m := &nats.Msg{Subject: tenant.KVSubject(b.kv.Bucket(), key), Header: nats.Header{}, Data: value}
	if o.Rollup {
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	var opts []jetstream.PublishOpt
	if o.Revision != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(o.Revision))
	}
	if o.TTL > 0 {
		opts = append(opts, jetstream.WithMsgTTL(o.TTL))
	}
	ack, err := b.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// Delete places a delete marker (the key's history stays); over rev only
// when rev is not 0.
func (b *Bucket) Delete(ctx context.Context, key string, rev uint64) error {
	_, err := retry(ctx, func(ctx context.Context, again bool) (struct{}, error) {
		var err error
		if rev != 0 {
			err = translate(b.kv.Delete(ctx, key, jetstream.LastRevision(rev)), kv.ErrConflict)
		} else {
			err = translate(b.kv.Delete(ctx, key), kv.ErrConflict)
		}
		if again && errors.Is(err, kv.ErrConflict) {
			// The first attempt's marker landed if the key reads as deleted.
			if _, gerr := b.kv.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
				return struct{}{}, nil
			}
		}
		return struct{}{}, err
	})
	return err
}

// Keys lists the keys holding a value that match filter ("" all), each
// once, in the order the bucket delivers them. A listing cut by ctx is an
// error, never a short list.
func (b *Bucket) Keys(ctx context.Context, filter string) ([]string, error) {
	var l jetstream.KeyLister
	var err error
	if filter == "" {
		l, err = b.kv.ListKeys(ctx)
	} else {
		l, err = b.kv.ListKeysFiltered(ctx, filter)
	}
	if err != nil {
		return nil, translate(err, nil)
	}
	out := []string{}
	seen := map[string]bool{}
	for k := range l.Keys() {
		if !seen[k] { // a listing during writes may repeat a key
			seen[k] = true
			out = append(out, k)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsstore: list keys: %w", err)
	}
	return out, nil
}

// translate maps a JetStream error to the contract: a failed revision
// condition (wrong last sequence: code 10071, or 10164 on replicated
// streams) to cas, a missing key or message to kv.ErrNotFound; the cause
// stays wrapped. Anything else is returned as it is.
func translate(err error, cas error) error {
	if err == nil {
		return nil
	}
	var apiErr *jetstream.APIError
	if cas != nil && (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
		return fmt.Errorf("%w: %w", cas, err)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: %w", kv.ErrNotFound, err)
	}
	return err
}
