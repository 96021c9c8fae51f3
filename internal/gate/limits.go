package gate

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// Record sizes. The store refuses a record larger than its max_payload
// (Config.MaxRecord), and a refusal after the effect would leave the
// execution in doubt, so the gate bounds what varies in a record before
// anything is written:
//
//   - an intent: Propose refuses one whose decision payload (the intent
//     with the decision input and the preview, the largest part of
//     intent.proposed, gate.allowed and the stored intent) takes more than
//     RecordBudget JSON-encoded, with body_too_large (413) and reason
//     ReasonRecordTooLarge, before it writes anything;
//   - an execution's output: run cuts an output that takes more than
//     RecordBudget (contract.JSONLen of its keys and values) to fit and
//     marks it OutputTruncated, and an error message to MaxErrorBytes, so
//     the outcome is recorded (execution.succeeded, the final claim) like
//     any other. The executors cut their own large values first, with the
//     original size (OutputOriginalBytes).
//
// RecordReserve is what is left for the rest of a record: the audit
// envelope (sequence, hashes, actor, time: under 1 KiB), the NATS subject
// and headers (under 1 KiB), the claim's decision (its checks, with the
// kill switches' reasons: under 16 KiB), the error (MaxErrorBytes), and the
// growth of a decision input between propose and execute (approvers).
const (
	// DefaultMaxRecord is the max record size when none is given: a stock
	// nats-server's max_payload.
	DefaultMaxRecord = 1 << 20
	// RecordReserve is kept, of every record's max size, for all but its
	// variable part.
	RecordReserve = 64 << 10
	// MaxErrorBytes bounds an execution's error message (JSONLen).
	MaxErrorBytes = 8 << 10
)

// Output keys the gate and the executors set on an output cut to fit.
const (
	// OutputTruncated is "true" on an output whose values were cut to fit
	// a record.
	OutputTruncated = "truncated"
	// OutputOriginalBytes is the size, in bytes, of the content or body
	// an executor cut (its size at the source), when it is known.
	OutputOriginalBytes = "original_bytes"
)

// ReasonRecordTooLarge is the reason of a proposal refused because its
// records would exceed the store's max record size.
const ReasonRecordTooLarge = "record_too_large"

// RecordBudget is what the variable part of a record (an intent with its
// decision input, an execution's output) may take JSON-encoded, in a store
// whose records are at most maxRecord bytes: maxRecord less RecordReserve.
func RecordBudget(maxRecord int64) int64 { return maxRecord - RecordReserve }

// OutputSize is what out takes as a JSON object, by contract.JSONLen of
// each key and value.
func OutputSize(out map[string]string) int64 {
	n := int64(2) // {}
	for k, v := range out {
		n += int64(contract.JSONLen(k)+contract.JSONLen(v)) + 2 // : and ,
	}
	return n
}

// errorCut ends an error message cut to MaxErrorBytes.
const errorCut = " [truncated]"

// fitOutput returns out and errMsg cut to fit a record: the error to
// MaxErrorBytes, and the output to budget (OutputSize), its largest values
// first, marked OutputTruncated. An output that fits is returned as it is.
func fitOutput(out map[string]string, errMsg string, budget int64) (map[string]string, string) {
	if contract.JSONLen(errMsg) > MaxErrorBytes {
		errMsg = contract.TruncateJSON(errMsg, MaxErrorBytes-len(errorCut)) + errorCut
	}
	if OutputSize(out) <= budget {
		return out, errMsg
	}
	out = maps.Clone(out)
	out[OutputTruncated] = "true"
	size := make(map[string]int, len(out))
	for k, v := range out {
		size[k] = contract.JSONLen(v)
	}
	keys := slices.Collect(maps.Keys(out))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(size[b], size[a]), cmp.Compare(a, b)) })
	for _, k := range keys {
		over := OutputSize(out) - budget
		if over <= 0 {
			break
		}
		if k == OutputTruncated {
			continue
		}
		out[k] = contract.TruncateJSON(out[k], int(max(int64(size[k])-over, 2)))
	}
	// Still over: too many keys. Drop them, largest first, until it fits.
	for _, k := range keys {
		if OutputSize(out) <= budget {
			break
		}
		if k != OutputTruncated {
			delete(out, k)
		}
	}
	return out, errMsg
}

// encodeValue is the JSON of a value the gate stores in a bucket (a claim,
// a stored intent): encoding/json's, without its HTML escaping, which
// writes each <, > and & of an output or a param as six bytes
// (contract.JSONLen counts what is left: control characters, invalid
// UTF-8, U+2028 and U+2029).
func encodeValue(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// checkIntentSize refuses a proposal whose decision payload would not fit
// a record (see RecordBudget).
func (g *Gate) checkIntentSize(p DecisionPayload) error {
	b, err := encodeValue(p)
	if err != nil {
		return fmt.Errorf("propose: encode: %w", err)
	}
	if budget := RecordBudget(g.cfg.MaxRecord); int64(len(b)) > budget {
		return &contract.Error{Code: contract.CodeTooLarge, Reasons: []string{ReasonRecordTooLarge}, Message: fmt.Sprintf(
			"the intent is too large to record: with its decision it takes %d bytes, and this store records at most %d (its NATS max_payload of %d bytes less %d for the rest of a record); nothing was stored: send smaller params",
			len(b), budget, g.cfg.MaxRecord, RecordReserve)}
	}
	return nil
}
