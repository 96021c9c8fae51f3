// Package archive keeps every policy bundle a node ever decided under, by
// its hash, in the store: replay finds the bundle a decision names there,
// so a later policy change (another binary's default, and with issue 17 a
// user's bundle) never breaks the replay of older decisions.
//
// Each bundle is stored once, create-only, under its hash (the SHA-256 of
// its cedar source, as recorded in every decision's policy_hash), and the
// store keeps it so: the bucket is write-once at the server (natsstore
// declares it with one message per key and no delete, purge or rollup), so
// no node can overwrite or remove an archived bundle. A stored source is
// trusted only if it hashes to its key, so a forged or damaged entry
// (written under a hash before its bundle was, or under a key that is no
// hash) is left out of the replay library and named: the decisions
// recorded under it fail replay loudly instead of re-deciding under the
// wrong rules, and the rest still verify.
package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// ErrCorrupt marks a stored bundle whose source does not hash to its key,
// does not compile, or a key that is no hash.
var ErrCorrupt = errors.New("policy archive: stored bundle is corrupt")

// Archive is the bundles bucket (natsstore.Store.Policies).
type Archive struct {
	b kv.Bucket
}

// New returns the archive on bucket b.
func New(b kv.Bucket) *Archive { return &Archive{b: b} }

var hashKey = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Put stores bundle under its hash. Storing a bundle that is already there
// is a no-op; a different source already stored under the hash is
// ErrCorrupt.
func (a *Archive) Put(ctx context.Context, bundle *policy.Bundle) error {
	src := bundle.Source()
	if contract.Hash(src) != bundle.Hash() {
		return fmt.Errorf("policy archive: bundle %s: source does not hash to %s", bundle.Name(), bundle.Hash())
	}
	_, err := a.b.Put(ctx, bundle.Hash(), src, kv.PutOptions{Create: true})
	if !errors.Is(err, kv.ErrExists) {
		if err != nil {
			return fmt.Errorf("policy archive: store bundle %s (%s): %w", bundle.Name(), bundle.Hash(), err)
		}
		return nil
	}
	e, err := a.b.Get(ctx, bundle.Hash())
	if err != nil {
		return fmt.Errorf("policy archive: read back bundle %s: %w", bundle.Hash(), err)
	}
	if !bytes.Equal(e.Value, src) {
		return fmt.Errorf("%w: %s holds another source than bundle %s", ErrCorrupt, bundle.Hash(), bundle.Name())
	}
	return nil
}

// Get returns the bundle stored under hash; kv.ErrNotFound if there is
// none, ErrCorrupt if what is stored is not that bundle.
func (a *Archive) Get(ctx context.Context, hash string) (*policy.Bundle, error) {
	if !hashKey.MatchString(hash) {
		return nil, fmt.Errorf("policy archive: %q is not a bundle hash: %w", hash, kv.ErrNotFound)
	}
	e, err := a.b.Get(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("policy archive: bundle %s: %w", hash, err)
	}
	return verified(hash, e.Value)
}

func verified(hash string, src []byte) (*policy.Bundle, error) {
	if contract.Hash(src) != hash {
		return nil, fmt.Errorf("%w: %s does not hash to its key", ErrCorrupt, hash)
	}
	b, err := policy.Compile("archive/"+hash[:12]+".cedar", src)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, hash, err)
	}
	return b, nil
}

// Library is what a replay of the live store trusts: the bundles of a
// base library and every archived bundle that verified against its key.
// An archived entry that did not (a source under a hash it does not have,
// one that does not compile, a key that is no hash) is left out and
// remembered: a Lookup of its key is that error, which wraps ErrCorrupt
// and names the key, so a replay fails just the decisions recorded under
// it, and the rest still verify.
type Library struct {
	bundles *policy.Library
	corrupt map[string]error // by key
}

// Lookup returns the bundle with the given hash: a base bundle (the
// binary's copy, whatever the archive holds under its hash), or a
// verified archived one; the entry's error (ErrCorrupt) for an entry left
// out; policy.ErrUnknownBundle for a hash neither holds.
func (l *Library) Lookup(hash string) (*policy.Bundle, error) {
	b, err := l.bundles.Lookup(hash)
	if err != nil {
		if bad, ok := l.corrupt[hash]; ok {
			return nil, bad
		}
	}
	return b, err
}

// Hashes lists the hashes of the library's bundles, sorted.
func (l *Library) Hashes() []string { return l.bundles.Hashes() }

// Corrupt lists the archive's entries left out of the library, each an
// error wrapping ErrCorrupt that names its key, sorted by key.
func (l *Library) Corrupt() []error {
	out := make([]error, 0, len(l.corrupt))
	for _, k := range slices.Sorted(maps.Keys(l.corrupt)) {
		out = append(out, l.corrupt[k])
	}
	return out
}

// Library returns base's bundles and every bundle in the archive, each
// verified against its key: what a replay of the live store trusts. A
// corrupt entry does not fail the library: it is left out and remembered
// (Library.Corrupt; a Lookup of it is its ErrCorrupt), so one bad entry
// costs only the decisions recorded under it. An archive that cannot be
// read is an error (fail closed: no replay under a partial library).
func (a *Archive) Library(ctx context.Context, base *policy.Library) (*Library, error) {
	keys, err := a.b.Keys(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("policy archive: list bundles: %w", err)
	}
	var bs []*policy.Bundle
	corrupt := map[string]error{}
	for _, h := range keys {
		if !hashKey.MatchString(h) {
			corrupt[h] = fmt.Errorf("%w: key %q is not a bundle hash", ErrCorrupt, h)
			continue
		}
		b, err := a.Get(ctx, h)
		switch {
		case errors.Is(err, ErrCorrupt):
			corrupt[h] = err
			continue
		case errors.Is(err, kv.ErrNotFound):
			continue // listed, then gone (an archive an earlier version kept could lose keys)
		case err != nil:
			return nil, err
		}
		if _, err := base.Lookup(h); err != nil {
			bs = append(bs, b) // not shipped in this binary
		}
	}
	return &Library{bundles: base.With(bs...), corrupt: corrupt}, nil
}
