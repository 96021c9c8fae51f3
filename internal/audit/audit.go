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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
	group  bool // group commit (see EnableGroupCommit)

	mu    sync.Mutex
	heads map[tenant.ID]*chainHead
}

type chainHead struct {
	mu        sync.Mutex // serializes this process's writers of one chain
	loaded    bool
	seq       uint64 // tenant chain sequence of the last record
	hash      string // hash of the last record
	streamSeq uint64 // stream sequence of the last record (0: none)

	// Group commit: appends wait in queue; one of them at a time (the
	// leader) writes a batch starting with its own record, then hands
	// over to the first waiter.
	qmu      sync.Mutex
	queue    []*pending
	flushing bool
}

// pending is one append waiting for a group commit.
type pending struct {
	rec  contract.AuditRecord
	done chan struct{} // closed when err is set, or to make it the leader
	lead bool
	err  error
}

// maxBatch bounds a group commit (JetStream's own limit is 1,000).
const maxBatch = 128

// New returns a Log on the audit stream.
func New(js jetstream.JetStream, stream jetstream.Stream) *Log {
	return &Log{js: js, stream: stream, heads: map[tenant.ID]*chainHead{}}
}

// EnableGroupCommit makes concurrent appends to one chain share a write:
// while one batch is being written, the records that arrive queue up and
// go together in the next, as one JetStream atomic batch (all or nothing,
// the first message carrying the chain's expected last sequence, so the
// chain check is unchanged). Each Append still returns only once its record
// is acknowledged. It pays off when every write is fsynced (--sync always):
// JetStream stages an atomic batch in its own small file store, which costs
// more than it saves when writes are not fsynced (BenchmarkGroupCommitLever).
// The stream must allow atomic publish (natsstore.Open configures it).
func (l *Log) EnableGroupCommit() { l.group = true }

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
	h := l.head(t)
	if !l.group {
		h.mu.Lock()
		defer h.mu.Unlock()
		recs := []*contract.AuditRecord{&rec}
		if err := l.write(ctx, t, h, recs); err != nil {
			return contract.AuditRecord{}, err
		}
		return rec, nil
	}

	p := &pending{rec: rec, done: make(chan struct{})}
	h.qmu.Lock()
	h.queue = append(h.queue, p)
	if h.flushing {
		h.qmu.Unlock()
		<-p.done // the record is in a leader's batch, or this is the next leader
		if !p.lead {
			return p.rec, p.err
		}
	} else {
		h.flushing = true
		h.qmu.Unlock()
	}
	// Leader: write one batch, which starts with p, then hand over.
	h.qmu.Lock()
	n := min(len(h.queue), maxBatch)
	batch := slices.Clone(h.queue[:n])
	h.queue = slices.Clone(h.queue[n:])
	h.qmu.Unlock()
	recs := make([]*contract.AuditRecord, len(batch))
	for i, q := range batch {
		recs[i] = &q.rec
	}
	// The batch carries other callers' records: it is not abandoned when
	// this caller goes away.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	h.mu.Lock()
	err = l.write(wctx, t, h, recs)
	h.mu.Unlock()
	cancel()
	for _, q := range batch[1:] {
		q.err = err
		close(q.done)
	}
	h.qmu.Lock()
	if len(h.queue) == 0 {
		h.flushing = false
	} else {
		h.queue[0].lead = true
		close(h.queue[0].done)
	}
	h.qmu.Unlock()
	if err != nil {
		return contract.AuditRecord{}, err
	}
	return p.rec, nil
}

// write appends recs, in order, at the head of t's chain (h.mu held): it
// fills in sequence and hashes, publishes (one message, or an atomic batch)
// expecting the chain's last stream sequence, and on a conflict (another
// writer appended) reloads the head and tries again.
func (l *Log) write(ctx context.Context, t tenant.ID, h *chainHead, recs []*contract.AuditRecord) error {
	subj := tenant.AuditSubject(t)
	what := recs[0].Kind
	if len(recs) > 1 {
		what = fmt.Sprintf("%d records", len(recs))
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if !h.loaded {
			if err := l.loadHead(ctx, t, h); err != nil {
				return err
			}
		}
		datas := make([][]byte, len(recs))
		seq, prev := h.seq, h.hash
		for i, rec := range recs {
			seq++
			rec.Seq, rec.PrevHash = seq, prev
			data, err := rec.Seal()
			if err != nil {
				return fmt.Errorf("audit append: encode: %w", err)
			}
			datas[i], prev = data, rec.Hash
		}
		start := time.Now()
		lastSeq, dup, err := l.publish(ctx, subj, h.streamSeq, recs, datas)
		if err != nil {
			var apiErr *jetstream.APIError
			h.loaded = false
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				continue // another writer appended: reload the head and retry
			}
			return fmt.Errorf("audit append %s to %s: %w", what, t, err)
		}
		metrics.AuditAppendSeconds.Observe(time.Since(start).Seconds())
		if dup {
			// A record with this exact hash is already stored at this position.
			h.loaded = false
			return nil
		}
		h.seq, h.hash, h.streamSeq = seq, prev, lastSeq
		return nil
	}
	return fmt.Errorf("audit append %s to %s: %w", what, t, ErrConflict)
}

// publish stores one record with a plain publish, or several as one
// JetStream atomic batch; either way the first message carries the
// expected last sequence of the chain's subject. It returns the stream
// sequence of the last message.
func (l *Log) publish(ctx context.Context, subj string, expect uint64, recs []*contract.AuditRecord, datas [][]byte) (uint64, bool, error) {
	if len(recs) == 1 {
		ack, err := l.js.Publish(ctx, subj, datas[0],
			jetstream.WithExpectLastSequencePerSubject(expect),
			jetstream.WithMsgID(recs[0].Hash))
		if err != nil {
			return 0, false, err
		}
		return ack.Sequence, ack.Duplicate, nil
	}
	nc := l.js.Conn()
	id := recs[0].Hash[:32] // unique: the first record's hash
	last := len(datas) - 1
	msg := func(i int) *nats.Msg {
		m := nats.NewMsg(subj)
		m.Data = datas[i]
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		m.Header.Set(jetstream.MsgIDHeader, recs[i].Hash)
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
		}
		return m
	}
	for i := range last {
		if err := nc.PublishMsg(msg(i)); err != nil {
			return 0, false, fmt.Errorf("atomic batch: %w", err)
		}
	}
	m := msg(last)
	m.Header.Set(hdrBatchCommit, "1")
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, false, fmt.Errorf("atomic batch commit: %w", err)
	}
	var ack struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
		Count int                 `json:"count"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, false, fmt.Errorf("atomic batch commit: decode acknowledgement: %w", err)
	}
	if ack.Error != nil {
		return 0, false, ack.Error
	}
	if ack.Count != len(datas) || ack.Seq == 0 {
		return 0, false, fmt.Errorf("atomic batch commit: acknowledged %d of %d records", ack.Count, len(datas))
	}
	return ack.Seq, false, nil
}

// JetStream atomic batch headers (nats-server 2.12+; nats.go has no
// constants for them yet).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

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
