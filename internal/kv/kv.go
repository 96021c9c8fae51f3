// Package kv is the key-value contract the domain packages keep their
// records in (the gate's intents and idempotency ledger, approvals, the key
// registry, the kill switches), and the one set of errors they branch on.
// It names no store: internal/natsstore implements Bucket on JetStream KV
// and translates the store's errors to these sentinels, once. The same
// sentinels name the same conditions of the audit stream (audit.Stream): a
// subject with no message is ErrNotFound, a write conditioned on a
// subject's last sequence (its revision) that found another is
// ErrConflict.
package kv

import (
	"context"
	"errors"
	"time"
)

// Errors a Bucket returns for its conditions; anything else is the store
// failing (callers fail closed on it).
var (
	// ErrNotFound: the key has no value (never written, deleted or
	// expired); of a stream, the subject holds no message.
	ErrNotFound = errors.New("kv: key not found")
	// ErrExists: a Create found the key holding a value.
	ErrExists = errors.New("kv: key exists")
	// ErrConflict: a write or delete conditioned on a revision (of a
	// stream: on the subject's last sequence) found another (a
	// concurrent change won).
	ErrConflict = errors.New("kv: wrong revision")
)

// Entry is a key's current value and the revision it was written at.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Change is what a watch of a bucket delivers (natsstore.Bucket.Watch,
// which the kill switches use): a key's new value or its deletion, or,
// once, the mark that the watch has caught up.
type Change struct {
	// Entry is the key and, unless Deleted, its new value; Revision is
	// the change's.
	Entry
	// Deleted: the key was deleted (or purged): it has no value now.
	Deleted bool
	// CaughtUp marks no change: every value the bucket held when the
	// watch began has been delivered before it.
	CaughtUp bool
}

// PutOptions qualify a Put. Create and Revision exclude each other.
type PutOptions struct {
	// Create writes only if the key has no value (never written, or
	// deleted); ErrExists otherwise.
	Create bool
	// Revision, when not 0, writes only over this revision; ErrConflict
	// otherwise.
	Revision uint64
	// TTL expires this revision after this long; 0 never (the bucket
	// must allow per-value TTLs). Once it expired the key reads the
	// latest earlier revision still kept, if any: give every write of
	// the key the TTL, or Rollup.
	TTL time.Duration
	// Rollup drops the key's earlier revisions. Not with Create.
	Rollup bool
}

// Bucket is a key-value bucket with revisions.
type Bucket interface {
	// Get returns key's current value; ErrNotFound when it has none.
	Get(ctx context.Context, key string) (Entry, error)
	// Put writes value as key's value under o's conditions and returns
	// the new revision.
	Put(ctx context.Context, key string, value []byte, o PutOptions) (uint64, error)
	// Delete removes key's value; when rev is not 0, only over that
	// revision (ErrConflict otherwise).
	Delete(ctx context.Context, key string, rev uint64) error
	// Keys lists the keys that hold a value, each once, matching filter
	// ("" for all; tokens separated by dots, * matches one, > the rest).
	Keys(ctx context.Context, filter string) ([]string, error)
}
