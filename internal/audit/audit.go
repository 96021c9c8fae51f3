// Package audit is ExoArmur's tamper-evident log: one hash chain per tenant
// on the JetStream audit stream (subject exoarmur.v1.audit.<tenant>).
//
// Each record carries its tenant, its sequence in the tenant's chain, the
// previous record's hash and its own hash over all of it. Appends from many
// goroutines or many processes stay linear: a writer publishes with the
// expected last sequence of the tenant's subject and, on conflict, reloads
// the head and retries. Records are stored as their canonical JSON, so an
// export is byte-for-byte what was hashed, and Verifier (a pure function of
// the bytes) checks a chain from any source: the live stream or a JSONL file.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Record kinds.
const (
	KindIntentProposed     = "intent.proposed"
	KindGateAllowed        = "gate.allowed"
	KindGateBlocked        = "gate.blocked"
	KindExecutionStarted   = "execution.started"
	KindExecutionSucceeded = "execution.succeeded"
	KindExecutionFailed    = "execution.failed"
	KindExecutionDuplicate = "execution.duplicate"
	KindAccessDenied       = "access.denied"
)

// ErrConflict is returned when the chain head kept moving under us for too
// many attempts.
var ErrConflict = errors.New("audit append: too many concurrent conflicts")

// maxAttempts bounds the optimistic-append retry loop.
const maxAttempts = 64

// Entry is what a caller appends; the log fills in sequence and hashes.
type Entry struct {
	Kind          string
	CorrelationID string
	Actor         string
	RequestID     string
	Time          time.Time
	Payload       any
}

// Log appends to and reads the per-tenant chains.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream

	mu    sync.Mutex
	heads map[tenant.ID]*chainHead
}

type chainHead struct {
	mu        sync.Mutex // serializes this process's writers of one chain
	loaded    bool
	seq       uint64 // tenant chain sequence of the last record
	hash      string // hash of the last record
	streamSeq uint64 // stream sequence of the last record (0: none)
}

// New returns a Log on the audit stream.
func New(js jetstream.JetStream, stream jetstream.Stream) *Log {
	return &Log{js: js, stream: stream, heads: map[tenant.ID]*chainHead{}}
}

func (l *Log) head(t tenant.ID) *chainHead {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.heads[t]
	if !ok {
		h = &chainHead{}
		l.heads[t] = h
	}
	return h
}

// Append adds e to tenant t's chain and returns the stored record. The
// record is durable when Append returns without error.
func (l *Log) Append(ctx context.Context, t tenant.ID, e Entry) (contract.AuditRecord, error) {
	if err := t.Check(); err != nil {
		return contract.AuditRecord{}, fmt.Errorf("audit append: %w", err)
	}
	payload, err := contract.Canonical(e.Payload)
	if err != nil {
		return contract.AuditRecord{}, fmt.Errorf("audit append %s: payload: %w", e.Kind, err)
	}
	rec := contract.AuditRecord{
		SchemaVersion: contract.SchemaVersion,
		Tenant:        t.String(),
		Kind:          e.Kind,
		CorrelationID: e.CorrelationID,
		Actor:         e.Actor,
		RequestID:     e.RequestID,
		Time:          e.Time.UTC(),
		Payload:       payload,
		PayloadHash:   contract.Hash(payload),
	}
	subj := tenant.AuditSubject(t)
	h := l.head(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if !h.loaded {
			if err := l.loadHead(ctx, t, h); err != nil {
				return contract.AuditRecord{}, err
			}
		}
		rec.Seq = h.seq + 1
		rec.PrevHash = h.hash
		data, err := rec.Seal()
		if err != nil {
			return contract.AuditRecord{}, fmt.Errorf("audit append: encode: %w", err)
		}
		start := time.Now()
		ack, err := l.js.Publish(ctx, subj, data,
			jetstream.WithExpectLastSequencePerSubject(h.streamSeq),
			jetstream.WithMsgID(rec.Hash))
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				h.loaded = false // another writer appended: reload the head and retry
				continue
			}
			h.loaded = false
			return contract.AuditRecord{}, fmt.Errorf("audit append %s to %s: %w", e.Kind, t, err)
		}
		metrics.AuditAppendSeconds.Observe(time.Since(start).Seconds())
		if ack.Duplicate {
			// A record with this exact hash is already stored at this position.
			h.loaded = false
			return rec, nil
		}
		h.seq, h.hash, h.streamSeq = rec.Seq, rec.Hash, ack.Sequence
		return rec, nil
	}
	return contract.AuditRecord{}, fmt.Errorf("audit append %s to %s: %w", e.Kind, t, ErrConflict)
}

func (l *Log) loadHead(ctx context.Context, t tenant.ID, h *chainHead) error {
	msg, err := l.stream.GetLastMsgForSubject(ctx, tenant.AuditSubject(t))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		h.seq, h.hash, h.streamSeq, h.loaded = 0, contract.ZeroHash, 0, true
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: load head of %s: %w", t, err)
	}
	var last contract.AuditRecord
	if err := json.Unmarshal(msg.Data, &last); err != nil {
		return fmt.Errorf("audit: decode head of %s (stream seq %d): %w", t, msg.Sequence, err)
	}
	h.seq, h.hash, h.streamSeq, h.loaded = last.Seq, last.Hash, msg.Sequence, true
	return nil
}

// Head returns the sequence and hash of the last record of t's chain
// (0 and ZeroHash for an empty chain), read from the stream.
func (l *Log) Head(ctx context.Context, t tenant.ID) (uint64, string, error) {
	if err := t.Check(); err != nil {
		return 0, "", err
	}
	var h chainHead
	if err := l.loadHead(ctx, t, &h); err != nil {
		return 0, "", err
	}
	return h.seq, h.hash, nil
}

// Scan calls fn with each stored record of t's chain, in order, starting
// after tenant sequence after, and stops after limit records (0: no limit)
// or when fn returns an error. raw is the record exactly as stored.
func (l *Log) Scan(ctx context.Context, t tenant.ID, after uint64, limit int, fn func(raw []byte, rec contract.AuditRecord) error) error {
	if err := t.Check(); err != nil {
		return err
	}
	subj := tenant.AuditSubject(t)
	last, err := l.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit scan %s: %w", t, err)
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("audit scan %s: consumer: %w", t, err)
	}
	defer l.stream.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) //nolint:errcheck // ordered consumers are ephemeral
	n := 0
	for {
		batch, err := cons.Fetch(512, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("audit scan %s: fetch: %w", t, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("audit scan %s: metadata: %w", t, err)
			}
			var rec contract.AuditRecord
			if err := json.Unmarshal(msg.Data(), &rec); err != nil {
				return fmt.Errorf("audit scan %s: decode stream seq %d: %w", t, md.Sequence.Stream, err)
			}
			if rec.Seq > after {
				if err := fn(msg.Data(), rec); err != nil {
					return err
				}
				n++
				if limit > 0 && n >= limit {
					return nil
				}
			}
			if md.Sequence.Stream >= last.Sequence {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("audit scan %s: %w", t, err)
		}
		if got == 0 {
			return fmt.Errorf("audit scan %s: stream returned no records before seq %d", t, last.Sequence)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// Tenants returns every tenant that has an audit chain, sorted.
func (l *Log) Tenants(ctx context.Context) ([]tenant.ID, error) {
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(tenant.AuditSubjects))
	if err != nil {
		return nil, fmt.Errorf("audit: list tenants: %w", err)
	}
	out := make([]tenant.ID, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		t, err := tenant.TenantFromAuditSubject(subj)
		if err != nil {
			return nil, fmt.Errorf("audit: unexpected subject %q: %w", subj, err)
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b tenant.ID) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}
