package auth

import (
	"cmp"
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

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
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
	kv      kv.Bucket
	rand    io.Reader        // crypto/rand in production; injectable for the demo
	now     func() time.Time // injected clock
	actions *action.Registry // the action types a key may be granted (default action.Builtin)
}

// SetActions sets the registry whose action types a key may be granted by
// name (the server's: the built-ins and the declared ones). Call it
// before the first Create.
func (k *Keys) SetActions(r *action.Registry) { k.actions = r }

// NewKeys returns the registry. rand must be a cryptographic source except in
// deterministic demos and tests.
func NewKeys(b kv.Bucket, rand io.Reader, now func() time.Time) *Keys {
	return &Keys{kv: b, rand: rand, now: now}
}

func (k *Keys) registry() *action.Registry {
	if k.actions == nil {
		return action.Builtin()
	}
	return k.actions
}

// CreateRequest describes a new key.
type CreateRequest struct {
	Name      string
	Role      string
	Tenants   []string
	Actions   []string
	ExpiresAt time.Time
	// Owner is the person the key is for (default: Name); four eyes counts
	// distinct owners.
	Owner string
	// CreatedBy is the creating principal's ID ("cli" from the command line).
	CreatedBy string
	// PendingConsent creates the key awaiting a second admin's consent
	// (Principal.PendingConsent).
	PendingConsent bool
}

// Validate checks a request and names the offending field. Granted action
// types must be built-in ones (action.Builtin).
func (r CreateRequest) Validate() error { return r.ValidateFor(action.Builtin()) }

// ValidateFor is Validate with the action types of actions.
func (r CreateRequest) ValidateFor(actions *action.Registry) error {
	switch {
	case r.Name == "" || len(r.Name) > 128:
		return errors.New("name: required, at most 128 bytes")
	case !ValidRole(r.Role):
		return fmt.Errorf("role %q: must be agent, auditor, operator or admin", r.Role)
	case len(r.Tenants) == 0:
		return errors.New("tenant: at least one is required")
	case len(r.Actions) == 0:
		return errors.New("actions: at least one action type, class (A0..A3) or * is required")
	case len(r.Owner) > 128:
		return errors.New("owner: at most 128 bytes")
	}
	for _, t := range r.Tenants {
		if t == SystemGrant {
			continue // the explicit grant of the global powers
		}
		if _, err := tenant.Parse(t); err != nil {
			return fmt.Errorf("tenant: %w", err)
		}
	}
	for _, a := range r.Actions {
		if a == "*" || contract.ValidClass(a) {
			continue
		}
		if _, ok := actions.Lookup(a); !ok {
			return fmt.Errorf("actions: action %q: %w (a declared action is known with the actions file that declares it)", a, action.ErrUnknown)
		}
	}
	return nil
}

// Create registers a new key and returns the secret key string (shown once)
// and its principal.
func (k *Keys) Create(ctx context.Context, req CreateRequest) (string, Principal, error) {
	if err := req.ValidateFor(k.registry()); err != nil {
		return "", Principal{}, fmt.Errorf("create key: %w", err)
	}
	buf := make([]byte, idBytes+secretBytes)
	if _, err := io.ReadFull(k.rand, buf); err != nil {
		return "", Principal{}, fmt.Errorf("create key: random: %w", err)
	}
	id := hex.EncodeToString(buf[:idBytes])
	secret := base64.RawURLEncoding.EncodeToString(buf[idBytes:])
	p := req.principal("key_"+id, k.now())
	data, err := json.Marshal(record{Principal: p, SecretHash: hashSecret(secret)})
	if err != nil {
		return "", Principal{}, fmt.Errorf("create key: encode: %w", err)
	}
	if _, err := k.kv.Put(ctx, id, data, kv.PutOptions{Create: true}); err != nil {
		return "", Principal{}, fmt.Errorf("create key: store: %w", err)
	}
	return KeyPrefix + id + "_" + secret, p, nil
}

// principal is the principal req describes, with sorted, deduplicated
// grants and the owner defaulting to the name.
func (r CreateRequest) principal(id string, now time.Time) Principal {
	p := Principal{
		ID:        id,
		Name:      r.Name,
		Role:      r.Role,
		Tenants:   slices.Compact(slices.Sorted(slices.Values(r.Tenants))),
		Actions:   slices.Compact(slices.Sorted(slices.Values(r.Actions))),
		Owner:     cmp.Or(r.Owner, r.Name),
		CreatedBy: r.CreatedBy,
		CreatedAt: now.UTC(),

		PendingConsent: r.PendingConsent,
	}
	if !r.ExpiresAt.IsZero() {
		p.ExpiresAt = r.ExpiresAt.UTC()
	}
	return p
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
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", "", false
		}
	}
	return id, secret, true
}

// KeyID returns the public id of a presented key ("" if malformed), for
// audit records that must name a key without its secret.
func KeyID(key string) string {
	id, _, ok := parseKey(key)
	if !ok {
		return ""
	}
	return "key_" + id
}

// Authenticate resolves a presented API key to its principal. Every failure
// is ErrUnauthenticated (or ErrExpired) and says nothing about which part of
// the secret was wrong; a malformed key or an unregistered key id is the
// more precise ErrUnknownKey (for the access layer's failure limits; the
// caller sees the same answer). Store failures are wrapped separately so
// callers can answer 503.
func (k *Keys) Authenticate(ctx context.Context, key string) (*Principal, error) {
	id, secret, ok := parseKey(key)
	if !ok {
		return nil, ErrUnknownKey
	}
	e, err := k.kv.Get(ctx, id)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, ErrUnknownKey
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	var rec record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return nil, fmt.Errorf("authenticate: decode key %s: %w", id, err)
	}
	want, err := hex.DecodeString(rec.SecretHash)
	if err != nil {
		return nil, fmt.Errorf("authenticate: key %s: bad stored hash: %w", id, err)
	}
	got := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return nil, ErrUnauthenticated
	}
	return k.usable(rec)
}

// usable returns rec's principal if it may act now: not revoked, not
// expired, not awaiting consent.
func (k *Keys) usable(rec record) (*Principal, error) {
	switch {
	case rec.Revoked:
		return nil, ErrUnauthenticated
	case rec.Principal.PendingConsent:
		return nil, ErrPendingConsent
	case rec.Principal.Expired(k.now()):
		return nil, ErrExpired
	}
	p := rec.Principal
	return &p, nil
}

// Principal returns the current principal of a key by principal ID
// (key_<id>): how the background worker acts with the proposer's grants as
// they are now. A revoked or expired key is ErrUnauthenticated/ErrExpired.
func (k *Keys) Principal(ctx context.Context, principalID string) (*Principal, error) {
	id, ok := registryKey(principalID) // API keys and client-certificate principals alike
	if !ok {
		return nil, ErrUnauthenticated
	}
	e, err := k.kv.Get(ctx, id)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("principal %s: %w", principalID, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return nil, fmt.Errorf("principal %s: decode: %w", principalID, err)
	}
	return k.usable(rec)
}

// Lookup returns a registered principal by ID, revoked or not (Revoked
// says so), for credential management; ErrUnauthenticated when there is
// none.
func (k *Keys) Lookup(ctx context.Context, principalID string) (Principal, error) {
	id, ok := registryKey(principalID)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	e, err := k.kv.Get(ctx, id)
	if errors.Is(err, kv.ErrNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("lookup %s: %w", principalID, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return Principal{}, fmt.Errorf("lookup %s: decode: %w", principalID, err)
	}
	p := rec.Principal
	p.Revoked = rec.Revoked
	return p, nil
}

// registryKey maps a principal ID to its registry key: key_<hex> -> <hex>,
// cert_<hex> -> cert_<hex>.
func registryKey(principalID string) (string, bool) {
	if id, ok := strings.CutPrefix(principalID, "key_"); ok && len(id) == 2*idBytes {
		return id, true
	}
	if strings.HasPrefix(principalID, "cert_") && len(principalID) == len("cert_")+2*idBytes {
		return principalID, true
	}
	return "", false
}

// List returns every registered principal (never a secret), sorted by ID.
func (k *Keys) List(ctx context.Context) ([]Principal, error) {
	keys, err := k.kv.Keys(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := []Principal{}
	for _, key := range keys {
		e, err := k.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var rec record
		if json.Unmarshal(e.Value, &rec) != nil {
			continue
		}
		p := rec.Principal
		p.Revoked = rec.Revoked
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Principal) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Revoke marks a principal's key revoked; it stops authenticating at once on
// every node (authentication reads the registry on every request).
func (k *Keys) Revoke(ctx context.Context, principalID string) (Principal, error) {
	return k.change(ctx, principalID, "revoke", func(rec *record) error {
		rec.Revoked = true
		return nil
	})
}

// change applies fn to principalID's record with a compare-and-set,
// retrying when another writer changed it first; an error from fn is
// returned as it is and nothing is written.
func (k *Keys) change(ctx context.Context, principalID, what string, fn func(*record) error) (Principal, error) {
	id, ok := registryKey(principalID)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	for attempt := 0; attempt < 8; attempt++ {
		e, err := k.kv.Get(ctx, id)
		if errors.Is(err, kv.ErrNotFound) {
			return Principal{}, ErrUnauthenticated
		}
		if err != nil {
			return Principal{}, fmt.Errorf("%s %s: %w", what, principalID, err)
		}
		var rec record
		if err := json.Unmarshal(e.Value, &rec); err != nil {
			return Principal{}, fmt.Errorf("%s %s: decode: %w", what, principalID, err)
		}
		if err := fn(&rec); err != nil {
			return Principal{}, err
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return Principal{}, fmt.Errorf("%s %s: encode: %w", what, principalID, err)
		}
		if _, err := k.kv.Put(ctx, id, data, kv.PutOptions{Revision: e.Revision}); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			return Principal{}, fmt.Errorf("%s %s: %w", what, principalID, err)
		}
		p := rec.Principal
		p.Revoked = rec.Revoked
		return p, nil
	}
	return Principal{}, fmt.Errorf("%s %s: too many concurrent changes", what, principalID)
}

// Consent records by's consent to a principal that awaits it: from then
// on it authenticates. ErrUnauthenticated for an unknown or revoked
// principal, ErrNotPending for one that awaits no consent. Who may consent
// is the access layer's decision (access.Service.ConsentKey).
func (k *Keys) Consent(ctx context.Context, principalID, by string) (Principal, error) {
	return k.change(ctx, principalID, "consent to", func(rec *record) error {
		if rec.Revoked {
			return ErrUnauthenticated
		}
		if !rec.Principal.PendingConsent {
			return ErrNotPending
		}
		rec.Principal.PendingConsent, rec.Principal.ConsentedBy = false, by
		return nil
	})
}

// CreateCert registers a principal authenticated by a client certificate
// whose subject common name is commonName (mutual TLS).
func (k *Keys) CreateCert(ctx context.Context, commonName string, req CreateRequest) (Principal, error) {
	if commonName == "" || len(commonName) > 256 {
		return Principal{}, errors.New("cert-cn: required, at most 256 bytes")
	}
	if err := req.ValidateFor(k.registry()); err != nil {
		return Principal{}, fmt.Errorf("create cert principal: %w", err)
	}
	id := certID(commonName)
	p := req.principal(id, k.now())
	p.CertCN = commonName
	data, err := json.Marshal(record{Principal: p})
	if err != nil {
		return Principal{}, err
	}
	if _, err := k.kv.Put(ctx, id, data, kv.PutOptions{Create: true}); err != nil {
		return Principal{}, fmt.Errorf("create cert principal: %w", err)
	}
	return p, nil
}

func certID(commonName string) string {
	sum := sha256.Sum256([]byte("cn:" + commonName))
	return "cert_" + hex.EncodeToString(sum[:idBytes])
}

// AuthenticateCert maps a verified client certificate's common name to its
// principal.
func (k *Keys) AuthenticateCert(ctx context.Context, commonName string) (*Principal, error) {
	e, err := k.kv.Get(ctx, certID(commonName))
	if errors.Is(err, kv.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate cert: %w", err)
	}
	var rec record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return nil, fmt.Errorf("authenticate cert: decode: %w", err)
	}
	if rec.Principal.CertCN != commonName {
		return nil, ErrUnauthenticated
	}
	return k.usable(rec)
}
