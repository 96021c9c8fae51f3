package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Bucket is what the checkpoints need of their bucket: a kv.Bucket whose
// keys are written once (natsstore declares it so), and the last value
// written among matching keys.
type Bucket interface {
	kv.Bucket
	Last(ctx context.Context, filter string) (kv.Entry, error)
}

// Store keeps the checkpoints with the chains, keyed
// tenant.CheckpointKey, and the public keys that signed them.
type Store struct{ b Bucket }

// NewStore returns the store on b.
func NewStore(b Bucket) *Store { return &Store{b: b} }

// Put stores cp. A checkpoint of the same record by the same key is
// stored once: a second Put of one keeps the first and is not an error.
func (s *Store) Put(ctx context.Context, cp contract.Checkpoint) error {
	t, err := tenant.ParseChain(cp.Tenant)
	if err != nil {
		return fmt.Errorf("store checkpoint: %w", err)
	}
	b, err := contract.Canonical(cp)
	if err != nil {
		return err
	}
	key := tenant.CheckpointKey(t, cp.Seq, cp.KeyID)
	_, err = s.b.Put(ctx, key, b, kv.PutOptions{Create: true})
	if errors.Is(err, kv.ErrExists) {
		// The same key signed the same record before (maybe at another
		// time): the stored one is kept, and one is enough.
		return nil
	}
	if err != nil {
		return fmt.Errorf("store checkpoint %s: %w", key, err)
	}
	return nil
}

// Latest returns the checkpoint of t stored last that keyID signed ("":
// any key); ok false when there is none.
func (s *Store) Latest(ctx context.Context, t tenant.ID, keyID string) (cp contract.Checkpoint, ok bool, err error) {
	filter := tenant.CheckpointKeyFilter(t)
	if keyID != "" {
		filter = t.String() + ".*." + keyID
	}
	e, err := s.b.Last(ctx, filter)
	if errors.Is(err, kv.ErrNotFound) {
		return contract.Checkpoint{}, false, nil
	}
	if err != nil {
		return contract.Checkpoint{}, false, fmt.Errorf("read checkpoints of %s: %w", t, err)
	}
	cp, err = contract.DecodeCheckpoint(e.Value)
	if err != nil {
		return contract.Checkpoint{}, false, fmt.Errorf("stored checkpoint %s: %w", e.Key, err)
	}
	if cp.Tenant != t.String() {
		return contract.Checkpoint{}, false, fmt.Errorf("stored checkpoint %s names tenant %q", e.Key, cp.Tenant)
	}
	return cp, true, nil
}

// Announce stores the public key keyID signs with; created reports that
// it was not stored before (the key is new to the store).
func (s *Store) Announce(ctx context.Context, keyID, publicKey string) (created bool, err error) {
	_, err = s.b.Put(ctx, tenant.CheckpointPubKey(keyID), []byte(publicKey), kv.PutOptions{Create: true})
	if errors.Is(err, kv.ErrExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("announce audit key %s: %w", keyID, err)
	}
	return true, nil
}
