package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// PutOptions qualify a Put.
type PutOptions struct {
	TTL      time.Duration // expire the value after this long; 0 never (the stream must allow message TTLs)
	Rollup   bool          // purge the key's earlier revisions
	Create   bool          // write only if the key has no value
	Revision uint64        // when not 0, write only over this revision
}

// Put writes data as the value of key in a KV bucket, with what the KV API
// cannot express together (a TTL on an update, a rollup, a compare-and-set).
// It publishes on the bucket's subject, as the KV API does, and returns the
// new revision. A failed Create or Revision condition wraps
// jetstream.ErrKeyExists (and the server's *jetstream.APIError).
//
// js is the library's jetstream.Publisher, not a narrower interface of our
// own, so that tools/inventory sees this call as the JetStream write it is.
func Put(ctx context.Context, js jetstream.Publisher, bucket, key string, data []byte, o PutOptions) (uint64, error) {
	m := &nats.Msg{Subject: tenant.KVSubject(bucket, key), Header: nats.Header{}, Data: data}
	if o.Rollup {
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	var opts []jetstream.PublishOpt
	switch {
	case o.Create && o.Revision != 0:
		return 0, errors.New("store: put: Create and Revision exclude each other")
	case o.Create:
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
	case o.Revision != 0:
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(o.Revision))
	}
	if o.TTL > 0 {
		opts = append(opts, jetstream.WithMsgTTL(o.TTL))
	}
	ack, err := js.PublishMsg(ctx, m, opts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", jetstream.ErrKeyExists, err)
		}
		return 0, err
	}
	return ack.Sequence, nil
}
