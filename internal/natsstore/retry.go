// Retries across a leader change (this file). When the server that leads
// a replicated stream dies, a request in flight to it is never answered,
// and the stream answers nothing until its other servers elect a new
// leader (a few seconds). Waiting out the caller's whole deadline on the
// first attempt would hold every write begun before the election for that
// long (30 s for an execution's outcome), so each attempt is bounded by
// attemptTimeout and a request the election left unanswered is sent
// again until the caller's context ends.
//
// Sending a write again is safe only if a first attempt that did land is
// recognised. The audit stream's records carry their hash as message ID
// and the chain's expected last sequence, so a landed first attempt makes
// the second a conflict, and audit.Log's reload finds its own record at
// the head. A conditional bucket write (create, update over a revision)
// that landed makes the second a conflict too: Bucket reads the key back,
// and a value identical to what it wrote is its own write (ownWrite).

package natsstore

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one attempt of a store request; retryPause is the
// pause before the next; retryWindow bounds them all: NATS elects a new
// leader 4 to 9 s after the last word of the old one (its raft election
// timeout, which is not configurable), so a request waits that long at
// most and then fails (503) as a store that is away does.
const (
	attemptTimeout = 2 * time.Second
	retryPause     = 100 * time.Millisecond
	retryWindow    = 12 * time.Second
)

// retry runs op, each attempt bounded by attemptTimeout, again while it
// fails the way a leader change makes a request fail (leaderLost), within
// retryWindow and while ctx has not ended. again tells op that an earlier
// attempt may have landed.
func retry[T any](ctx context.Context, op func(ctx context.Context, again bool) (T, error)) (T, error) {
	until := time.Now().Add(retryWindow)
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := op(actx, attempt > 0)
		cancel()
		if err == nil || !leaderLost(err) || ctx.Err() != nil || time.Now().After(until) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(retryPause):
		}
	}
}

// leaderLost: err is a request nobody answered in time, or that found no
// server to answer it, or JetStream saying it has no leader right now.
func leaderLost(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.As(err, &apiErr) && apiErr.Code == 503
}

// ownWrite is the revision of key when it holds exactly value: a write
// retried after an attempt that landed (ok false otherwise).
func (b *Bucket) ownWrite(ctx context.Context, key string, value []byte) (rev uint64, ok bool) {
	e, err := retry(ctx, func(ctx context.Context, _ bool) (jetstream.KeyValueEntry, error) { return b.kv.Get(ctx, key) })
	if err != nil || !bytes.Equal(e.Value(), value) {
		return 0, false
	}
	return e.Revision(), true
}
