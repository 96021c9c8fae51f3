// The kill switches' side of the adapter (this file): what
// killswitch.Switches declares it needs beyond a kv.Bucket, a watch of the
// control bucket and its latest revision (methods of Bucket, for any
// bucket), and Bus, core NATS publish/subscribe for the propagation
// acknowledgements that are never stored.

package natsstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/kv"
)

// Watch watches every key of the bucket. The channel delivers each key's
// current value (a deleted key as Deleted), then one kv.Change with
// CaughtUp set, then every later change, in revision order. When ctx ends
// (or the watch ends by itself: the connection closed) Watch stops the
// watch and closes the channel.
func (b *Bucket) Watch(ctx context.Context) (<-chan kv.Change, error) {
	w, err := b.kv.WatchAll(ctx)
	if err != nil {
		return nil, translate(err, nil)
	}
	out := make(chan kv.Change)
	go func() {
		defer close(out)
		defer w.Stop() //nolint:errcheck // shutting down
		for {
			var c kv.Change
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the end of the initial values
					c.CaughtUp = true
				} else {
					c.Entry = kv.Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}
					c.Deleted = e.Operation() != jetstream.KeyValuePut
				}
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// LastRevision returns the bucket's latest revision, of any key (the last
// sequence of its stream): a watch that delivered it is current.
func (b *Bucket) LastRevision(ctx context.Context) (uint64, error) {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("natsstore: bucket %s: status %T has no stream state", b.kv.Bucket(), st)
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// Bus is core NATS publish/subscribe: best effort, nothing stored (the
// kill switches' propagation acknowledgements, which repeat).
type Bus struct {
	nc *nats.Conn
}

// NewBus returns the bus on connection nc.
func NewBus(nc *nats.Conn) *Bus { return &Bus{nc: nc} }

// Publish sends data on subject to whoever subscribes now.
func (b *Bus) Publish(subject string, data []byte) error {
	return b.nc.Publish(subject, data)
}

// Subscribe calls fn with the data of every message on subject, one at a
// time, until unsubscribe is called.
func (b *Bus) Subscribe(subject string, fn func(data []byte)) (unsubscribe func() error, err error) {
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, err
	}
	return sub.Unsubscribe, nil
}
