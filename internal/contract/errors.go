package contract

import (
	"errors"
	"fmt"
	"time"
)

// Error codes: stable, machine-readable, part of the V1 wire contract
// ({"error":{"code":...,"message":...}}). HTTP status mapping happens only at
// the edge (internal/api).
const (
	CodeInvalid          = "invalid_request"
	CodeInvalidTenant    = "invalid_tenant"
	CodeUnauthenticated  = "unauthenticated"
	CodeForbidden        = "forbidden"
	CodeBlocked          = "blocked"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeInDoubt          = "in_doubt"
	CodeTooLarge         = "body_too_large"
	CodeUnknownAction    = "unknown_action"
	CodeStoreUnavailable = "store_unavailable"
	CodeInternal         = "internal"
	// CodeSelfApproval: the proposer, or another credential of its owner,
	// approving or denying its own intent.
	CodeSelfApproval = "self_approval"
	// CodeRateLimited: too many failed authentications (against the key id
	// presented, or naming no key from this source or from everywhere), or
	// a propose, execute or approval vote beyond its principal's or its
	// tenant's rate; Error.RetryAfter says when to try again.
	CodeRateLimited = "rate_limited"
	// CodeQuotaExceeded: a proposal refused because its tenant holds as
	// many pending intents, pending approvals or stored bytes as its quota
	// allows; nothing was written. Retrying helps only once some of them
	// are executed, decided or expired (no Retry-After).
	CodeQuotaExceeded = "quota_exceeded"
	// CodeMethodNotAllowed: a route that exists, with another method.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeRequestTimeout: the client sent its request body too slowly.
	CodeRequestTimeout = "request_timeout"
)

// Error is the one application error type: a stable code, a message that is
// safe to show the caller, optional reason codes (for blocked decisions) and
// the wrapped internal cause, which is logged but never shown.
type Error struct {
	Code    string
	Message string
	Reasons []string
	Err     error
	// RetryAfter, if positive, is when the caller may try again (HTTP
	// Retry-After, rounded up to whole seconds).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error by code, so errors.Is(err, &Error{Code: CodeNotFound}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns an *Error with a formatted user-safe message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with code and message whose cause is err.
func Wrap(code, message string, err error) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
