package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// Checkpoints anchor a chain outside the store: a node signs, with an
// ed25519 key it keeps in a file (internal/checkpoint), that a tenant
// chain's record at a sequence has a hash. This file is the pure part:
// the key's public form and id, signing and verifying a checkpoint
// (contract.Checkpoint), and the set of keys a verifier trusts.

// Errors of checkpoint verification, wrapped with what was found.
var (
	// ErrUntrustedKey: the checkpoint names a key the verifier does not trust.
	ErrUntrustedKey = errors.New("checkpoint signed by a key that is not trusted")
	// ErrBadSignature: the signature does not verify (the checkpoint was altered or forged).
	ErrBadSignature = errors.New("checkpoint signature does not verify")
)

// publicKeyPrefix starts the text form of a public key.
const publicKeyPrefix = "ed25519:"

// KeyID is a public key's id: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// FormatPublicKey is pub's text form: "ed25519:" and its base64.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads a public key's text form (FormatPublicKey).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, publicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("public key %q: must start with %q (print it with `exoarmur audit pubkey`)", clip(s), publicKeyPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %q: not a base64 ed25519 public key of %d bytes", clip(s), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Signer is a private checkpoint key.
type Signer struct {
	ID  string
	key ed25519.PrivateKey
}

// NewSigner returns the signer of key.
func NewSigner(key ed25519.PrivateKey) Signer {
	return Signer{ID: KeyID(key.Public().(ed25519.PublicKey)), key: key}
}

// Public is the signer's public key.
func (s Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign returns the checkpoint of tenant's record seq with hash, made at
// at and signed.
func (s Signer) Sign(tenantID string, seq uint64, hash string, at time.Time) (contract.Checkpoint, error) {
	cp := contract.Checkpoint{
		SchemaVersion: contract.SchemaVersion, Type: contract.CheckpointType,
		Tenant: tenantID, Seq: seq, RecordHash: hash, Time: at.UTC(), KeyID: s.ID,
	}
	msg, err := cp.SignedBytes()
	if err != nil {
		return contract.Checkpoint{}, err
	}
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, msg))
	return cp, nil
}

// Trust is the set of public keys a verifier accepts checkpoints from, by
// key id.
type Trust map[string]ed25519.PublicKey

// NewTrust returns the trust of keys.
func NewTrust(keys ...ed25519.PublicKey) Trust {
	t := Trust{}
	for _, k := range keys {
		t[KeyID(k)] = k
	}
	return t
}

// IDs returns the trusted key ids, sorted.
func (t Trust) IDs() []string {
	ids := make([]string, 0, len(t))
	for id := range t {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify checks cp's signature: ErrUntrustedKey or ErrBadSignature, each
// with what the checkpoint says.
func (t Trust) Verify(cp contract.Checkpoint) error {
	pub, ok := t[cp.KeyID]
	if !ok {
		return fmt.Errorf("checkpoint of %s at seq %d: %w (key %s; trusted: %s)", cp.Tenant, cp.Seq, ErrUntrustedKey, cp.KeyID, strings.Join(t.IDs(), ", "))
	}
	sig, err := base64.StdEncoding.DecodeString(cp.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("checkpoint of %s at seq %d: %w (the signature is not base64 of %d bytes)", cp.Tenant, cp.Seq, ErrBadSignature, ed25519.SignatureSize)
	}
	msg, err := cp.SignedBytes()
	if err != nil {
		return fmt.Errorf("checkpoint of %s at seq %d: %w", cp.Tenant, cp.Seq, err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("checkpoint of %s at seq %d: %w (altered or forged)", cp.Tenant, cp.Seq, ErrBadSignature)
	}
	return nil
}
