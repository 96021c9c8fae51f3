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

// Checked is what one record shows on its own, before its place in a
// chain: Check computes it (pure, so records can be checked concurrently)
// and Verifier.NextChecked links it.
type Checked struct {
	Rec    contract.AuditRecord
	Parsed bool   // strictly decoded and its bytes are canonical: Rec is exactly the record
	early  string // a failure reported before the chain links are looked at
	late   string // a failure reported after them
}

// Check verifies what a record shows alone, given exactly as stored: it
// decodes strictly, its bytes are the canonical form, its schema version,
// its payload hash and its own hash.
func Check(raw []byte) Checked {
	var c Checked
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.Rec); err != nil {
		c.Rec, c.early = contract.AuditRecord{}, fmt.Sprintf("undecodable: %v", err)
		return c
	}
	// The stored bytes must be exactly the canonical form (any altered
	// byte, reordered key or added space fails here).
	canon, err := contract.CanonicalizeJSON(raw)
	if err != nil {
		c.early = fmt.Sprintf("cannot canonicalize: %v", err)
		return c
	}
	if !bytes.Equal(canon, raw) {
		c.early = "bytes are not the canonical form of the record (altered)"
		return c
	}
	c.Parsed = true
	if c.Rec.SchemaVersion != contract.SchemaVersion {
		c.early = fmt.Sprintf("schema_version %q", c.Rec.SchemaVersion)
		return c
	}
	if contract.Hash(c.Rec.Payload) != c.Rec.PayloadHash {
		c.late = "payload_hash does not match payload"
		return c
	}
	// raw is canonical, so the record without its hash is raw less the
	// "hash" member: hash that, without re-encoding the record.
	member := []byte(`,"hash":"` + c.Rec.Hash + `"`)
	if len(c.Rec.Hash) != 64 || bytes.Count(raw, member) != 1 {
		c.late = "hash member missing or malformed"
		return c
	}
	if contract.Hash(bytes.Replace(raw, member, nil, 1)) != c.Rec.Hash {
		c.late = "hash does not match record content"
	}
	return c
}

// Next verifies the next record, given exactly as stored (canonical JSON),
// and returns it decoded.
func (v *Verifier) Next(raw []byte) (contract.AuditRecord, error) {
	return v.NextChecked(Check(raw))
}

// NextChecked links a checked record as the next of the chain and returns
// it. Failures are reported in one order: decoding, canonical bytes and
// schema version; then tenant, sequence and previous hash; then payload
// and record hashes.
func (v *Verifier) NextChecked(c Checked) (contract.AuditRecord, error) {
	want := v.seq + 1
	fail := func(format string, args ...any) (contract.AuditRecord, error) {
		return contract.AuditRecord{}, &VerifyError{Tenant: v.Tenant, Seq: want, Reason: fmt.Sprintf(format, args...)}
	}
	rec := c.Rec
	switch {
	case c.early != "":
		return fail("%s", c.early)
	case rec.Tenant != v.Tenant:
		return fail("tenant %q in chain of %q", rec.Tenant, v.Tenant)
	case rec.Seq != want:
		return fail("sequence %d, expected %d", rec.Seq, want)
	case rec.PrevHash != v.prev:
		return fail("prev_hash does not match the previous record's hash")
	case c.late != "":
		return fail("%s", c.late)
	}
	v.seq, v.prev = rec.Seq, rec.Hash
	return rec, nil
}

// Resync continues verification after a failed record, taking the stored
// sequence and hash of that record as the new head, so the records after a
// tampered one are checked on their own.
func (v *Verifier) Resync(seq uint64, hash string) { v.seq, v.prev = seq, hash }
