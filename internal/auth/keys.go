package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// KeyPrefix starts every API key.
const KeyPrefix = "exo_"

const (
	idBytes     = 8  // public key id: 64 bits, hex
	secretBytes = 32 // secret: 256 bits
)

// record is what the registry stores per key: never the secret.
type record struct {
	Principal  Principal `json:"principal"`
	SecretHash string    `json:"secret_hash"` // hex SHA-256 of the secret
	Revoked    bool      `json:"revoked,omitempty"`
}

// Keys is the API key registry on the principals bucket.
type Keys struct {
	kv   jetstream.KeyValue
	rand io.Reader        // crypto/rand in production; injectable for the demo
	now  func() time.Time // injected clock
}

// NewKeys returns the registry. rand must be a cryptographic source except in
// deterministic demos and tests.
func NewKeys(kv jetstream.KeyValue, rand io.Reader, now func() time.Time) *Keys {
	return &Keys{kv: kv, rand: rand, now: now}
}

// CreateRequest describes a new key.
type CreateRequest struct {
	Name      string
	Role      string
	Tenants   []string
	Actions   []string
	ExpiresAt time.Time
}

// Validate checks a request and names the offending field.
func (r CreateRequest) Validate() error {
	switch {
	case r.Name == "" || len(r.Name) > 128:
		return errors.New("name: required, at most 128 bytes")
	case !ValidRole(r.Role):
		return fmt.Errorf("role %q: must be agent, operator or admin", r.Role)
	case len(r.Tenants) == 0:
		return errors.New("tenant: at least one is required")
	case len(r.Actions) == 0:
		return errors.New("actions: at least one action type, class (A0..A3) or * is required")
	}
	for _, t := range r.Tenants {
		if _, err := tenant.Parse(t); err != nil {
			return fmt.Errorf("tenant: %w", err)
		}
	}
	for _, a := range r.Actions {
		if a == "*" || contract.ValidClass(a) {
			continue
		}
		if _, err := contract.LookupAction(a); err != nil {
			return fmt.Errorf("actions: %w", err)
		}
	}
	return nil
}

// Create registers a new key and returns the secret key string (shown once)
// and its principal.
func (k *Keys) Create(ctx context.Context, req CreateRequest) (string, Principal, error) {
	if err := req.Validate(); err != nil {
		return "", Principal{}, fmt.Errorf("create key: %w", err)
	}
	buf := make([]byte, idBytes+secretBytes)
	if _, err := io.ReadFull(k.rand, buf); err != nil {
		return "", Principal{}, fmt.Errorf("create key: random: %w", err)
	}
	id := hex.EncodeToString(buf[:idBytes])
	secret := base64.RawURLEncoding.EncodeToString(buf[idBytes:])
	p := Principal{
		ID:        "key_" + id,
		Name:      req.Name,
		Role:      req.Role,
		Tenants:   slices.Sorted(slices.Values(req.Tenants)),
		Actions:   slices.Sorted(slices.Values(req.Actions)),
		CreatedAt: k.now().UTC(),
		ExpiresAt: req.ExpiresAt.UTC(),
	}
	p.Tenants, p.Actions = slices.Compact(p.Tenants), slices.Compact(p.Actions)
	if req.ExpiresAt.IsZero() {
		p.ExpiresAt = time.Time{}
	}
	data, err := json.Marshal(record{Principal: p, SecretHash: hashSecret(secret)})
	if err != nil {
		return "", Principal{}, fmt.Errorf("create key: encode: %w", err)
	}
	if _, err := k.kv.Create(ctx, id, data); err != nil {
		return "", Principal{}, fmt.Errorf("create key: store: %w", err)
	}
	return KeyPrefix + id + "_" + secret, p, nil
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// parseKey splits exo_<16 hex>_<43 base64url> without allocating errors that
// reveal anything.
func parseKey(key string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(key, KeyPrefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || len(id) != 2*idBytes || len(secret) != base64.RawURLEncoding.EncodedLen(secretBytes) {
		return "", "", false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", "", false
		}
	}
	return id, secret, true
}

// Authenticate resolves a presented API key to its principal. Every failure
// is ErrUnauthenticated (or ErrExpired) and says nothing about which part was
// wrong; store failures are wrapped separately so callers can answer 503.
func (k *Keys) Authenticate(ctx context.Context, key string) (*Principal, error) {
	id, secret, ok := parseKey(key)
	if !ok {
		return nil, ErrUnauthenticated
	}
	e, err := k.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("authenticate: decode key %s: %w", id, err)
	}
	want, err := hex.DecodeString(rec.SecretHash)
	if err != nil {
		return nil, fmt.Errorf("authenticate: key %s: bad stored hash: %w", id, err)
	}
	got := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], want) != 1 || rec.Revoked {
		return nil, ErrUnauthenticated
	}
	if rec.Principal.Expired(k.now()) {
		return nil, ErrExpired
	}
	p := rec.Principal
	return &p, nil
}

// Principal returns the current principal of a key by principal ID
// (key_<id>): how the background worker acts with the proposer's grants as
// they are now. A revoked or expired key is ErrUnauthenticated/ErrExpired.
func (k *Keys) Principal(ctx context.Context, principalID string) (*Principal, error) {
	id, ok := strings.CutPrefix(principalID, "key_")
	if !ok || len(id) != 2*idBytes {
		return nil, ErrUnauthenticated
	}
	e, err := k.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("principal %s: %w", principalID, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("principal %s: decode: %w", principalID, err)
	}
	if rec.Revoked {
		return nil, ErrUnauthenticated
	}
	if rec.Principal.Expired(k.now()) {
		return nil, ErrExpired
	}
	p := rec.Principal
	return &p, nil
}
