package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// CheckpointType is the "type" of a checkpoint, which tells a checkpoint
// line of an export from an audit record (records carry "kind", never
// "type").
const CheckpointType = "checkpoint"

// Checkpoint is a node's signed statement of one tenant chain's head: the
// record at Seq has hash RecordHash (contracts/v1/checkpoint.schema.json,
// additive to V1). Signature is the ed25519 signature, base64 (standard
// encoding), of SignedBytes by the key KeyID names.
type Checkpoint struct {
	SchemaVersion string    `json:"schema_version"`
	Type          string    `json:"type"`
	Tenant        string    `json:"tenant"`
	Seq           uint64    `json:"seq"`
	RecordHash    string    `json:"record_hash"`
	Time          time.Time `json:"time"`
	KeyID         string    `json:"key_id"`
	Signature     string    `json:"signature,omitempty"`
}

// checkpointDomain separates what a checkpoint key signs from anything
// else an ed25519 key might sign.
const checkpointDomain = "exoarmur audit checkpoint v1\n"

// SignedBytes is what the signature covers: a domain prefix and the
// canonical JSON of the checkpoint without its signature.
func (c Checkpoint) SignedBytes() ([]byte, error) {
	c.Signature = ""
	b, err := Canonical(c)
	if err != nil {
		return nil, err
	}
	return append([]byte(checkpointDomain), b...), nil
}

// DecodeCheckpoint decodes one checkpoint strictly (no unknown fields, one
// JSON value) and checks its shape, not its signature.
func DecodeCheckpoint(raw []byte) (Checkpoint, error) {
	var c Checkpoint
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	if dec.More() {
		return Checkpoint{}, fmt.Errorf("checkpoint: trailing data")
	}
	switch {
	case c.SchemaVersion != SchemaVersion:
		return Checkpoint{}, fmt.Errorf("checkpoint: schema_version %q", c.SchemaVersion)
	case c.Type != CheckpointType:
		return Checkpoint{}, fmt.Errorf("checkpoint: type %q", c.Type)
	case c.Tenant == "" || c.Seq == 0 || len(c.RecordHash) != 64 || c.KeyID == "" || c.Signature == "":
		return Checkpoint{}, fmt.Errorf("checkpoint: tenant, seq, record_hash, key_id and signature are required")
	}
	return c, nil
}

// checkpointSuffix ends a checkpoint's canonical JSON ("type" is its last
// member in key order); an audit record's canonical JSON ends with its
// "time" member instead.
const checkpointSuffix = `,"type":"checkpoint"}`

// IsCheckpointLine reports whether an export line (canonical JSON, with or
// without its newline) is a checkpoint rather than an audit record.
func IsCheckpointLine(line []byte) bool {
	return bytes.HasSuffix(bytes.TrimRight(line, "\r\n"), []byte(checkpointSuffix))
}
