package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// ErrChainBroken is wrapped by every verification failure.
var ErrChainBroken = errors.New("audit chain broken")

// Verifier checks one tenant's chain record by record. It is pure: it only
// looks at the bytes it is given.
type Verifier struct {
	Tenant string
	seq    uint64
	prev   string
}

// NewVerifier returns a verifier for tenant's chain, starting at its first record.
func NewVerifier(tenantID string) *Verifier {
	return &Verifier{Tenant: tenantID, prev: contract.ZeroHash}
}

// Head returns the sequence and hash of the last verified record.
func (v *Verifier) Head() (uint64, string) { return v.seq, v.prev }

// VerifyError names the record that failed.
type VerifyError struct {
	Tenant string
	Seq    uint64 // the expected sequence of the failing record
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit chain %s: record %d: %s", e.Tenant, e.Seq, e.Reason)
}

func (e *VerifyError) Unwrap() error { return ErrChainBroken }

// Next verifies the next record, given exactly as stored (canonical JSON),
// and returns it decoded.
func (v *Verifier) Next(raw []byte) (contract.AuditRecord, error) {
	want := v.seq + 1
	fail := func(format string, args ...any) (contract.AuditRecord, error) {
		return contract.AuditRecord{}, &VerifyError{Tenant: v.Tenant, Seq: want, Reason: fmt.Sprintf(format, args...)}
	}
	var rec contract.AuditRecord
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return fail("undecodable: %v", err)
	}
	// The stored bytes must be exactly the canonical form (any altered
	// byte, reordered key or added space fails here).
	canon, err := contract.CanonicalizeJSON(raw)
	if err != nil {
		return fail("cannot canonicalize: %v", err)
	}
	if !bytes.Equal(canon, raw) {
		return fail("bytes are not the canonical form of the record (altered)")
	}
	switch {
	case rec.SchemaVersion != contract.SchemaVersion:
		return fail("schema_version %q", rec.SchemaVersion)
	case rec.Tenant != v.Tenant:
		return fail("tenant %q in chain of %q", rec.Tenant, v.Tenant)
	case rec.Seq != want:
		return fail("sequence %d, expected %d", rec.Seq, want)
	case rec.PrevHash != v.prev:
		return fail("prev_hash does not match the previous record's hash")
	case contract.Hash(rec.Payload) != rec.PayloadHash:
		return fail("payload_hash does not match payload")
	}
	// raw is canonical, so the record without its hash is raw less the
	// "hash" member: hash that, without re-encoding the record.
	member := []byte(`,"hash":"` + rec.Hash + `"`)
	if len(rec.Hash) != 64 || bytes.Count(raw, member) != 1 {
		return fail("hash member missing or malformed")
	}
	if contract.Hash(bytes.Replace(raw, member, nil, 1)) != rec.Hash {
		return fail("hash does not match record content")
	}
	v.seq, v.prev = rec.Seq, rec.Hash
	return rec, nil
}

// Resync continues verification after a failed record, taking the stored
// sequence and hash of that record as the new head, so the records after a
// tampered one are checked on their own.
func (v *Verifier) Resync(seq uint64, hash string) { v.seq, v.prev = seq, hash }
