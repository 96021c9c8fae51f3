// Package audit is ExoArmur's tamper-evident log: one hash chain per tenant
// on the audit stream (subject exoarmur.v1.audit.<tenant>).
//
// Each record carries its tenant, its sequence in the tenant's chain, the
// previous record's hash and its own hash over all of it. Appends from many
// goroutines or many processes stay linear: a writer publishes with the
// expected last sequence of the tenant's subject and, on conflict, reloads
// the head and retries. Records are stored as their canonical JSON, so an
// export is byte-for-byte what was hashed, and Verifier (a pure function of
// the bytes) checks a chain from any source: the live stream or a JSONL file.
//
// The log imports no NATS: it declares what it needs of the stream
// (Stream), which the store adapter implements on JetStream
// (natsstore.Stream), translating a wrong expected sequence to
// kv.ErrConflict and an empty subject to kv.ErrNotFound.
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

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
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

// Stream is what the log needs of the audit stream, one subject per
// tenant chain (tenant.AuditSubject); natsstore.Stream implements it on
// JetStream. Conditions come back as kv's sentinels, which the log
// branches on with errors.Is.
type Stream interface {
	// Publish stores data on subject if the subject's last stream
	// sequence is expect (0: none), with message ID id; kv.ErrConflict
	// if it is not. It returns the message's stream sequence, and
	// duplicate when a message with this ID was already stored (nothing
	// was stored again).
	Publish(ctx context.Context, subject string, data []byte, id string, expect uint64) (seq uint64, duplicate bool, err error)
	// PublishBatch stores datas on subject, in order, all or nothing, the
	// first conditioned on expect as Publish is; ids[i] is datas[i]'s
	// message ID. It returns the stream sequence of the last one.
	PublishBatch(ctx context.Context, subject string, datas [][]byte, ids []string, expect uint64) (last uint64, err error)
	// Last returns the last message on subject and its stream sequence;
	// kv.ErrNotFound when the subject holds none.
	Last(ctx context.Context, subject string) (data []byte, seq uint64, err error)
	// Read calls fn with each message on subject in stream order, from
	// stream sequence from (0: the first) up to the last one stored when
	// Read began, and stops at fn's first error, which it returns as it is.
	Read(ctx context.Context, subject string, from uint64, fn func(seq uint64, data []byte) error) error
	// Subjects returns the subjects matching filter that hold a message.
	Subjects(ctx context.Context, filter string) ([]string, error)
}

// Log appends to and reads the per-tenant chains.
type Log struct {
	stream Stream
	group  bool // group commit (see EnableGroupCommit)

	mu    sync.Mutex
	heads map[tenant.ID]*chainHead

	// appended, if set (OnAppend), is told of every record this log
	// stored.
	appended func(Appended)
}

// Appended is one record a Log stored: its tenant, sequence, previous
// hash, hash and stream sequence (0 when not known: a record of a batch
// before its last).
type Appended struct {
	Tenant    tenant.ID
	Seq       uint64
	PrevHash  string
	Hash      string
	StreamSeq uint64
}

// OnAppend sets fn to be told of each record this log stores, in chain
// order (the checkpointer follows the chain this node wrote). fn is called
// with the chain's lock held and must not block. Set it before the first
// Append.
func (l *Log) OnAppend(fn func(Appended)) { l.appended = fn }

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
func New(stream Stream) *Log {
	return &Log{stream: stream, heads: map[tenant.ID]*chainHead{}}
}

// EnableGroupCommit makes concurrent appends to one chain share a write:
// while one batch is being written, the records that arrive queue up and
// go together in the next, as one atomic batch (Stream.PublishBatch: all
// or nothing, the first message carrying the chain's expected last
// sequence, so the chain check is unchanged). Each Append still returns only once its record
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
	landed := "" // the last record's hash as the previous attempt sealed it
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if !h.loaded {
			if err := l.loadHead(ctx, t, h); err != nil {
				return err
			}
			if landed != "" && h.hash == landed {
				// The previous attempt was stored after all (its answer
				// was lost and the store's retry conflicted with it): the
				// head is this very record, sealed at this position.
				return nil
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
		landed = prev
		lastSeq, dup, err := l.publish(ctx, subj, h.streamSeq, recs, datas)
		if err != nil {
			h.loaded = false
			if errors.Is(err, kv.ErrConflict) {
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
		if l.appended != nil {
			for i, rec := range recs {
				var ss uint64
				if i == len(recs)-1 {
					ss = lastSeq
				}
				l.appended(Appended{Tenant: t, Seq: rec.Seq, PrevHash: rec.PrevHash, Hash: rec.Hash, StreamSeq: ss})
			}
		}
		return nil
	}
	return fmt.Errorf("audit append %s to %s: %w", what, t, ErrConflict)
}

// publish stores one record with a plain publish, or several as one
// atomic batch; either way the first message carries the expected last
// sequence of the chain's subject and each its record's hash as message
// ID. It returns the stream sequence of the last message.
func (l *Log) publish(ctx context.Context, subj string, expect uint64, recs []*contract.AuditRecord, datas [][]byte) (uint64, bool, error) {
	if len(recs) == 1 {
		return l.stream.Publish(ctx, subj, datas[0], recs[0].Hash, expect)
	}
	ids := make([]string, len(recs))
	for i, rec := range recs {
		ids[i] = rec.Hash
	}
	last, err := l.stream.PublishBatch(ctx, subj, datas, ids, expect)
	return last, false, err
}

func (l *Log) loadHead(ctx context.Context, t tenant.ID, h *chainHead) error {
	data, seq, err := l.stream.Last(ctx, tenant.AuditSubject(t))
	if errors.Is(err, kv.ErrNotFound) {
		h.seq, h.hash, h.streamSeq, h.loaded = 0, contract.ZeroHash, 0, true
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: load head of %s: %w", t, err)
	}
	var last contract.AuditRecord
	if err := json.Unmarshal(data, &last); err != nil {
		return fmt.Errorf("audit: decode head of %s (stream seq %d): %w", t, seq, err)
	}
	h.seq, h.hash, h.streamSeq, h.loaded = last.Seq, last.Hash, seq, true
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
// or when fn returns an error, which it returns as it is. raw is the
// record exactly as stored.
func (l *Log) Scan(ctx context.Context, t tenant.ID, after uint64, limit int, fn func(raw []byte, rec contract.AuditRecord) error) error {
	return l.scan(ctx, t, after, limit, decodeRecord, fn)
}

// ScanHeads is Scan whose rec is the record's envelope, without its
// payload (raw holds it): for the readers that pass records on as they
// are (an export, an audit page, a verification), for which decoding every
// payload was most of a long read's cost.
func (l *Log) ScanHeads(ctx context.Context, t tenant.ID, after uint64, limit int, fn func(raw []byte, rec contract.AuditRecord) error) error {
	return l.scan(ctx, t, after, limit, decodeHead, fn)
}

func decodeRecord(data []byte) (contract.AuditRecord, error) {
	var rec contract.AuditRecord
	err := json.Unmarshal(data, &rec)
	return rec, err
}

func (l *Log) scan(ctx context.Context, t tenant.ID, after uint64, limit int, decode func([]byte) (contract.AuditRecord, error), fn func(raw []byte, rec contract.AuditRecord) error) error {
	if err := t.Check(); err != nil {
		return err
	}
	n := 0
	var stop error // fn's error, or errLimit: what ended the read early
	err := l.stream.Read(ctx, tenant.AuditSubject(t), 0, func(seq uint64, data []byte) error {
		rec, err := decode(data)
		if err != nil {
			return fmt.Errorf("decode stream seq %d: %w", seq, err)
		}
		if rec.Seq <= after {
			return nil
		}
		if err := fn(data, rec); err != nil {
			stop = err
			return err
		}
		n++
		if limit > 0 && n >= limit {
			stop = errLimit
			return errLimit
		}
		return nil
	})
	if stop != nil && errors.Is(err, stop) { // the read did not fail: it was ended
		if errors.Is(stop, errLimit) {
			return nil
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("audit scan %s: %w", t, err)
	}
	return nil
}

// Follow calls fn with each stored record of t's chain exactly as stored,
// with its stream sequence, starting at stream sequence from (0: the
// chain's first record), and stops when fn returns an error, which it
// returns as it is. It is how a reader that knows where it left off (the
// checkpointer) reads only what was added since.
func (l *Log) Follow(ctx context.Context, t tenant.ID, from uint64, fn func(streamSeq uint64, raw []byte) error) error {
	if err := t.Check(); err != nil {
		return err
	}
	var stop error
	err := l.stream.Read(ctx, tenant.AuditSubject(t), from, func(seq uint64, data []byte) error {
		if err := fn(seq, data); err != nil {
			stop = err
			return err
		}
		return nil
	})
	if stop != nil && errors.Is(err, stop) {
		return err
	}
	if err != nil {
		return fmt.Errorf("audit read %s: %w", t, err)
	}
	return nil
}

// ScanOwned is Scan restricted to the records of the intents principal
// proposed: it reads the window of up to limit records after sequence
// after (limit > 0) and calls fn, in order, with those of the window that
// belong to one of principal's intents, and returns the window's last
// sequence (after, when the window is empty), from which the next window
// starts. A window may hold none of principal's records: the chain's end
// is reached when the returned sequence is less than after+limit (a
// chain's sequences are contiguous).
//
// A record belongs to an intent (its correlation ID) from the intent's
// intent.proposed record on: principal owns intent X after the last
// intent.proposed or access.denied record of X is principal's own
// intent.proposed. An intent ID is derived from the idempotency key, so
// the ID of an intent that expired under a retention can be proposed
// again by another principal, or refused to one (access.denied): from
// that record on, X's records are not principal's. Ownership at the start
// of the window is read from the records before it, for the window's
// correlation IDs only: the memory is the window's, the cost two reads of
// the chain up to the window (Scan reads from the chain's start).
func (l *Log) ScanOwned(ctx context.Context, t tenant.ID, principal string, after uint64, limit int, fn func(raw []byte, rec contract.AuditRecord) error) (uint64, error) {
	if limit <= 0 {
		return after, errors.New("audit: ScanOwned needs a limit")
	}
	type held struct {
		raw []byte
		rec contract.AuditRecord
	}
	var window []held
	last := after
	owned := map[string]bool{} // the window's correlation IDs: principal owns it now
	err := l.ScanHeads(ctx, t, after, limit, func(raw []byte, rec contract.AuditRecord) error {
		window = append(window, held{raw, rec})
		owned[rec.CorrelationID] = false
		last = rec.Seq
		return nil
	})
	if err != nil || len(window) == 0 {
		return after, err
	}
	follow := func(rec contract.AuditRecord) {
		if rec.Kind != KindIntentProposed && rec.Kind != KindAccessDenied {
			return
		}
		if _, ok := owned[rec.CorrelationID]; ok {
			owned[rec.CorrelationID] = rec.Kind == KindIntentProposed && rec.Actor == principal
		}
	}
	if after > 0 {
		err := l.ScanHeads(ctx, t, 0, int(min(after, 1<<62)), func(_ []byte, rec contract.AuditRecord) error {
			if rec.Seq > after {
				return errLimit
			}
			follow(rec)
			return nil
		})
		if err != nil && !errors.Is(err, errLimit) {
			return after, err
		}
	}
	for _, h := range window {
		follow(h.rec)
		if owned[h.rec.CorrelationID] {
			if err := fn(h.raw, h.rec); err != nil {
				return after, err
			}
		}
	}
	return last, nil
}

// ScanIntent calls fn, in order, with up to limit (> 0) records of intent
// intentID (its correlation ID) after sequence after, reading the chain
// in one pass to its end or to the limit-th record. With principal set,
// only the records from principal's own intent.proposed record of the
// intent on, up to the intent ID's next intent.proposed or access.denied
// record by anyone (ScanOwned: the ID of an intent that expired can be
// proposed again). It returns the sequence of the last record delivered
// when the limit was reached (more may follow), else the last record read
// (after, when none): the intent's records end when fewer than limit were
// delivered. Memory: nothing but the call's.
func (l *Log) ScanIntent(ctx context.Context, t tenant.ID, intentID, principal string, after uint64, limit int, fn func(raw []byte, rec contract.AuditRecord) error) (uint64, error) {
	if limit <= 0 {
		return after, errors.New("audit: ScanIntent needs a limit")
	}
	last, n := after, 0
	owned := principal == ""
	err := l.ScanHeads(ctx, t, 0, 0, func(raw []byte, rec contract.AuditRecord) error {
		if rec.CorrelationID != intentID {
			last = max(last, rec.Seq)
			return nil
		}
		if principal != "" && (rec.Kind == KindIntentProposed || rec.Kind == KindAccessDenied) {
			owned = rec.Kind == KindIntentProposed && rec.Actor == principal
		}
		if rec.Seq <= after || !owned {
			last = max(last, rec.Seq)
			return nil
		}
		if err := fn(raw, rec); err != nil {
			return err
		}
		last = rec.Seq
		if n++; n == limit {
			return errLimit
		}
		return nil
	})
	return last, err
}

// recordHead is an audit record less its payload: what a scan decodes.
type recordHead struct {
	SchemaVersion string    `json:"schema_version"`
	Tenant        string    `json:"tenant"`
	Seq           uint64    `json:"seq"`
	Kind          string    `json:"kind"`
	CorrelationID string    `json:"correlation_id"`
	Actor         string    `json:"actor"`
	RequestID     string    `json:"request_id"`
	Time          time.Time `json:"time"`
	PayloadHash   string    `json:"payload_hash"`
	PrevHash      string    `json:"prev_hash"`
	Hash          string    `json:"hash"`
}

// decodeHead decodes a stored record's envelope (the payload is skipped).
func decodeHead(data []byte) (contract.AuditRecord, error) {
	var h recordHead
	if err := json.Unmarshal(data, &h); err != nil {
		return contract.AuditRecord{}, err
	}
	return contract.AuditRecord{SchemaVersion: h.SchemaVersion, Tenant: h.Tenant, Seq: h.Seq, Kind: h.Kind, CorrelationID: h.CorrelationID,
		Actor: h.Actor, RequestID: h.RequestID, Time: h.Time, PayloadHash: h.PayloadHash, PrevHash: h.PrevHash, Hash: h.Hash}, nil
}

// errLimit ends a Scan that has delivered its limit.
var errLimit = errors.New("audit scan: limit reached")

// Tenants returns every tenant that has an audit chain, sorted.
func (l *Log) Tenants(ctx context.Context) ([]tenant.ID, error) {
	subjects, err := l.stream.Subjects(ctx, tenant.AuditSubjects)
	if err != nil {
		return nil, fmt.Errorf("audit: list tenants: %w", err)
	}
	out := make([]tenant.ID, 0, len(subjects))
	for _, subj := range subjects {
		t, err := tenant.TenantFromAuditSubject(subj)
		if err != nil {
			return nil, fmt.Errorf("audit: unexpected subject %q: %w", subj, err)
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b tenant.ID) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}
