// Package checkpoint anchors the audit chains outside NATS. Each node
// holds ed25519 audit keys in a file of its own (Keyring: created on first
// start, mode 0600, never in the store); the Checkpointer signs every
// tenant chain's head regularly and on demand (audit.Signer), after
// verifying that the chain still extends the last checkpoint it signed or
// saw, stores each checkpoint with the chain (Store, write-once), and
// hands a copy to a witness outside the store (Witness: an HTTP endpoint
// or a file outside the data dir).
//
// Verification is pure and lives in internal/audit (Trust) and
// internal/replay (Anchor, Require): an export ends with the checkpoint of
// its last record; a verifier holding the public key detects a cut,
// rewritten or re-hashed export, and one holding a witness's checkpoint
// detects a chain recreated shorter or different. docs/design/09_checkpoints_design.md
// says what each attacker can and cannot do undetected.
//
// ed25519 is the standard library's (crypto/ed25519): no dependency.
package checkpoint

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
)

// ErrNoKey is returned by Load when the key file does not exist.
var ErrNoKey = errors.New("no audit key file")

// fileVersion is the key file's format.
const fileVersion = 1

type keyFile struct {
	Version int       `json:"version"`
	Keys    []fileKey `json:"keys"`
}

type fileKey struct {
	KeyID      string    `json:"key_id"`
	PublicKey  string    `json:"public_key"`
	PrivateKey string    `json:"private_key"` // base64 of the 32-byte seed
	Created    time.Time `json:"created"`
	Retired    time.Time `json:"retired,omitzero"`
}

// KeyInfo describes one key of a keyring, without its private part.
type KeyInfo struct {
	KeyID     string    `json:"key_id"`
	PublicKey string    `json:"public_key"` // audit.FormatPublicKey
	Created   time.Time `json:"created"`
	Retired   time.Time `json:"retired,omitzero"`
	Current   bool      `json:"current"`
}

// Keyring is a node's audit keys: the current one signs; retired ones
// (after Rotate) are kept so that the checkpoints they signed still
// verify.
type Keyring struct {
	path string
	keys []fileKey
	cur  audit.Signer
}

// Load reads the key file at path. It refuses a file that others may read
// or write (its mode must allow the owner only, as ssh does for its keys)
// and one whose keys do not match their ids.
func Load(path string) (*Keyring, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: `exoarmur serve` creates it on first start (--audit-key)", ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s: mode %04o lets others read or write it; run chmod 600 %s", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return parse(path, raw)
}

func parse(path string, raw []byte) (*Keyring, error) {
	var f keyFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("audit key %s: not a key file: %v", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("audit key %s: version %d, this binary reads version %d", path, f.Version, fileVersion)
	}
	k := &Keyring{path: path, keys: f.Keys}
	current := -1
	for i, e := range f.Keys {
		seed, err := base64.StdEncoding.DecodeString(e.PrivateKey)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("audit key %s: key %d: private_key is not a base64 ed25519 seed", path, i+1)
		}
		s := audit.NewSigner(ed25519.NewKeyFromSeed(seed))
		if s.ID != e.KeyID || audit.FormatPublicKey(s.Public()) != e.PublicKey {
			return nil, fmt.Errorf("audit key %s: key %d: key_id or public_key does not match its private key", path, i+1)
		}
		if e.Retired.IsZero() {
			if current >= 0 {
				return nil, fmt.Errorf("audit key %s: keys %d and %d are both current; retire one", path, current+1, i+1)
			}
			current, k.cur = i, s
		}
	}
	if current < 0 {
		return nil, fmt.Errorf("audit key %s: every key is retired; run `exoarmur audit rotate-key`", path)
	}
	return k, nil
}

// LoadOrCreate loads the key file at path, or creates it (mode 0600, its
// directory 0700 if missing) with one new key from rand. created reports
// which.
func LoadOrCreate(path string, rand io.Reader, now time.Time) (k *Keyring, created bool, err error) {
	k, err = Load(path)
	if !errors.Is(err, ErrNoKey) {
		return k, false, err
	}
	k = &Keyring{path: path}
	if err := k.add(rand, now); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("audit key: %w", err)
	}
	if err := k.write(true); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// add makes a new current key.
func (k *Keyring) add(rand io.Reader, now time.Time) error {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return fmt.Errorf("audit key: generate: %w", err)
	}
	s := audit.NewSigner(priv)
	k.keys = append(k.keys, fileKey{KeyID: s.ID, PublicKey: audit.FormatPublicKey(s.Public()),
		PrivateKey: base64.StdEncoding.EncodeToString(priv.Seed()), Created: now.UTC()})
	k.cur = s
	return nil
}

// Rotate retires the current key and makes a new one current, written to
// the file before it returns (the file is replaced atomically). The
// retired key stays in the file: the checkpoints it signed still verify.
func (k *Keyring) Rotate(rand io.Reader, now time.Time) (old, new KeyInfo, err error) {
	old = k.info(k.cur.ID)
	next := &Keyring{path: k.path, keys: append([]fileKey(nil), k.keys...)}
	for i := range next.keys {
		if next.keys[i].Retired.IsZero() {
			next.keys[i].Retired = now.UTC()
		}
	}
	if err := next.add(rand, now); err != nil {
		return KeyInfo{}, KeyInfo{}, err
	}
	if err := next.write(false); err != nil {
		return KeyInfo{}, KeyInfo{}, err
	}
	*k = *next
	old.Retired, old.Current = now.UTC(), false
	return old, k.info(k.cur.ID), nil
}

// write stores the keyring at its path through a temporary file in the
// same directory, mode 0600; excl refuses to replace a file (a first
// start racing another).
func (k *Keyring) write(excl bool) error {
	b, err := json.MarshalIndent(keyFile{Version: fileVersion, Keys: k.keys}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".audit-key-*")
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("audit key: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("audit key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("audit key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	if excl {
		// A hard link fails if the name exists: no first start overwrites
		// another's key.
		if err := os.Link(tmp.Name(), k.path); err != nil {
			return fmt.Errorf("audit key: create %s: %w", k.path, err)
		}
		return nil
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	return nil
}

// Path is the key file's path.
func (k *Keyring) Path() string { return k.path }

// Signer is the current key.
func (k *Keyring) Signer() audit.Signer { return k.cur }

// Trust is every key of the ring, current and retired.
func (k *Keyring) Trust() audit.Trust {
	t := audit.Trust{}
	for _, e := range k.keys {
		if pub, err := audit.ParsePublicKey(e.PublicKey); err == nil { // checked by parse
			t[e.KeyID] = pub
		}
	}
	return t
}

// Keys describes every key of the ring, oldest first.
func (k *Keyring) Keys() []KeyInfo {
	out := make([]KeyInfo, len(k.keys))
	for i, e := range k.keys {
		out[i] = k.info(e.KeyID)
	}
	return out
}

func (k *Keyring) info(id string) KeyInfo {
	for _, e := range k.keys {
		if e.KeyID == id {
			return KeyInfo{KeyID: e.KeyID, PublicKey: e.PublicKey, Created: e.Created, Retired: e.Retired, Current: e.KeyID == k.cur.ID}
		}
	}
	return KeyInfo{}
}
