// Package natsstoretest helps tests open a store on a NATS JetStream
// cluster: a cluster answers only once its members elected a meta leader,
// so opening is retried for a bound, and placement is checked on the
// stream itself.
package natsstoretest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// OpenCluster opens a store at replicas on the servers at urls, retrying
// while the cluster forms (at most within), and closes it at the end of
// the test.
func OpenCluster(tb testing.TB, urls []string, replicas int, within time.Duration) *natsstore.Store {
	tb.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := natsstore.Open(ctx, natsstore.Config{NATSURL: strings.Join(urls, ","), Replicas: replicas})
		cancel()
		if err == nil {
			tb.Cleanup(func() { st.Close() })
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no store at R%d on %v after %v: %v", replicas, urls, within, err)
		}
	}
}

// RequirePlaced fails the test unless stream has replicas configured and
// placed: a leader and replicas-1 peers.
func RequirePlaced(tb testing.TB, st *natsstore.Store, stream string, replicas int) {
	tb.Helper()
	ctx := context.Background()
	s, err := st.JS.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.Config.Replicas != replicas || info.Cluster == nil || len(info.Cluster.Replicas) != replicas-1 {
		tb.Fatalf("stream %s: replicas %d, cluster %+v; want %d placed (a leader and %d peers)", stream, info.Config.Replicas, info.Cluster, replicas, replicas-1)
	}
}

// RequireNoConsumers fails the test, naming them, unless stream has no
// consumer (what every scan of the audit stream leaves behind: none). On
// a cluster, the server that answers a stream's info may learn of a
// consumer's deletion a moment after the deletion was confirmed: a count
// above zero is looked at again, for at most 10 s (a consumer left behind
// stays for its inactive threshold, a minute or more).
func RequireNoConsumers(tb testing.TB, st *natsstore.Store, stream, after string) {
	tb.Helper()
	ctx := context.Background()
	s, err := st.JS.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := s.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		var names []string
		for n := range s.ConsumerNames(ctx).Name() {
			names = append(names, n)
		}
		if info.State.Consumers == 0 && len(names) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: stream %s has %d consumers after 10s: %v", after, stream, info.State.Consumers, names)
		}
	}
}

// RequireValuesFit fails the test for each value of buckets' keys
// matching filter that takes more than limit bytes (a record that would
// not fit the server's max_payload).
func RequireValuesFit(tb testing.TB, limit int64, filter string, buckets ...*natsstore.Bucket) {
	tb.Helper()
	ctx := context.Background()
	for _, b := range buckets {
		keys, err := b.Keys(ctx, filter)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			tb.Fatal(err)
		}
		for _, k := range keys {
			e, err := b.Get(ctx, k)
			if err != nil {
				tb.Fatal(err)
			}
			if int64(len(e.Value)) > limit {
				tb.Errorf("value of %s takes %d bytes, more than %d", k, len(e.Value), limit)
			}
		}
	}
}
