// Package tenant validates tenant identifiers and builds every NATS stream,
// subject, KV bucket and KV key name that ExoArmur uses.
//
// It is the one naming module of the design brief: nothing else in the code
// concatenates a subject or a key. Every tenant-scoped name takes an ID, which
// can only be obtained through Parse, so an unvalidated string cannot reach a
// subject or key by accident: the compiler refuses it. The few names that are
// not tenant scoped are listed in GlobalExemptions with their reason.
package tenant

import (
	"context"
	"errors"
	"fmt"
)

// ErrInvalid is returned (wrapped) for a tenant ID, intent ID or idempotency
// key that does not match its grammar. Callers map it to HTTP 400.
var ErrInvalid = errors.New("invalid identifier")

// ErrMissing is returned when an operation needs a tenant and none was given.
var ErrMissing = errors.New("missing tenant")

// MaxLen is the longest tenant ID accepted.
const MaxLen = 63

// ID is a validated tenant identifier matching [a-z0-9][a-z0-9-]{0,62}.
// The zero ID is invalid; IsZero reports it and every store operation refuses it.
type ID struct{ s string }

// Parse validates s and returns it as an ID.
func Parse(s string) (ID, error) {
	if !validTenant(s) {
		return ID{}, fmt.Errorf("tenant %q: must match [a-z0-9][a-z0-9-]{0,62}: %w", truncate(s), ErrInvalid)
	}
	if s == System.s {
		return ID{}, fmt.Errorf("tenant %q is reserved for the system audit chain: %w", s, ErrInvalid)
	}
	return ID{s}, nil
}

// ParseChain validates the tenant of an audit chain named in data the
// store or an export holds (a checkpoint): a tenant ID, or System's.
func ParseChain(s string) (ID, error) {
	if s == System.s {
		return System, nil
	}
	return Parse(s)
}

// MustParse is Parse for constants in tests and the demo; it panics on error.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return id
}

func validTenant(s string) bool {
	if len(s) == 0 || len(s) > MaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return false
		}
	}
	return true
}

// String returns the tenant ID.
func (id ID) String() string { return id.s }

// IsZero reports whether id is the invalid zero ID.
func (id ID) IsZero() bool { return id.s == "" }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.s), nil }

// UnmarshalText implements encoding.TextUnmarshaler and validates.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// Check returns ErrMissing for the zero ID. Store functions call it first so a
// missing tenant fails closed before any store access.
func (id ID) Check() error {
	if id.IsZero() {
		return ErrMissing
	}
	return nil
}

type ctxKey struct{}

// WithContext returns a context carrying the tenant.
func WithContext(ctx context.Context, id ID) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the tenant carried by ctx, or ErrMissing.
func FromContext(ctx context.Context) (ID, error) {
	id, ok := ctx.Value(ctxKey{}).(ID)
	if !ok || id.IsZero() {
		return ID{}, ErrMissing
	}
	return id, nil
}

// ValidIntentID reports whether s is a well-formed intent ID (as minted by
// the gate: lowercase letters, digits, '_' and '-', at most 64 bytes).
func ValidIntentID(s string) error {
	if len(s) == 0 || len(s) > 64 {
		return fmt.Errorf("intent id %q: length must be 1..64: %w", truncate(s), ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("intent id %q: only [a-z0-9_-] allowed: %w", truncate(s), ErrInvalid)
		}
	}
	return nil
}

// ValidIdempotencyKey reports whether s is an acceptable client idempotency
// key: [A-Za-z0-9_-]{1,128}. Dots, wildcards and separators never reach a key.
func ValidIdempotencyKey(s string) error {
	if len(s) == 0 || len(s) > 128 {
		return fmt.Errorf("idempotency key: length must be 1..128: %w", ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("idempotency key: only [A-Za-z0-9_-] allowed: %w", ErrInvalid)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}
