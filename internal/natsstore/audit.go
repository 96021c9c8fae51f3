// Stream (this file) is the adapter of the audit stream: one subject per
// tenant chain, written with the subject's expected last sequence and a
// message ID, one message at a time or as an atomic batch. It implements
// what audit.Log declares it needs (audit.Stream) and translates
// JetStream's errors to kv's sentinels: a wrong expected sequence is
// kv.ErrConflict, a subject with no message kv.ErrNotFound.

package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/kv"
)

// Stream is an append-only JetStream stream with one subject per chain.
type Stream struct {
	s jetstream.Stream
	// js publishes (the library's own interface, so that tools/inventory
	// sees the writes); its connection carries the atomic batches.
	js jetstream.JetStream
}

// NewStream returns the adapter of stream s; js publishes to it.
func NewStream(s jetstream.Stream, js jetstream.JetStream) *Stream {
	return &Stream{s: s, js: js}
}

// Stream is the JetStream stream under the adapter, for what the domain
// never does (tests that inspect stored headers, the broker's refusals).
func (s *Stream) Stream() jetstream.Stream { return s.s }

// Publish stores data on subject if the subject's last stream sequence is
// expect (0: the subject holds nothing), with message ID id. It returns
// the message's stream sequence, and duplicate when the stream already
// held a message with this ID (within its duplicate window) and stored
// nothing. A subject whose last sequence is not expect is kv.ErrConflict
// (the server checks it first, also for a duplicate).
func (s *Stream) Publish(ctx context.Context, subject string, data []byte, id string, expect uint64) (uint64, bool, error) {
	// Retried across a leader change (retry.go): a first attempt that
	// landed makes the next a conflict, and audit.Log finds its record at
	// the head of the chain.
	ack, err := retry(ctx, func(ctx context.Context, _ bool) (*jetstream.PubAck, error) {
		return s.js.Publish(ctx, subject, data,
			jetstream.WithExpectLastSequencePerSubject(expect),
			jetstream.WithMsgID(id))
	})
	if err != nil {
		return 0, false, translate(err, kv.ErrConflict)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// PublishBatch stores datas on subject, in order, as one JetStream atomic
// batch: all or nothing. The first message carries the expected last
// sequence of the subject (a wrong one is kv.ErrConflict, nothing stored);
// ids[i] is datas[i]'s message ID, and the batch's ID is the first
// message ID's first 32 characters (unique while the message IDs are).
// It returns the stream sequence of the last message. The stream must
// allow atomic publish (Open's audit stream does).
func (s *Stream) PublishBatch(ctx context.Context, subject string, datas [][]byte, ids []string, expect uint64) (uint64, error) {
	if len(datas) == 0 || len(ids) != len(datas) || ids[0] == "" {
		return 0, fmt.Errorf("natsstore: atomic batch of %d messages with %d IDs: want one ID per message", len(datas), len(ids))
	}
	nc := s.js.Conn()
	batch := ids[0][:min(len(ids[0]), 32)]
	last := len(datas) - 1
	msg := func(i int) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = datas[i]
		m.Header.Set(hdrBatchID, batch)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		m.Header.Set(jetstream.MsgIDHeader, ids[i])
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
		}
		return m
	}
	for i := range last {
		if err := nc.PublishMsg(msg(i)); err != nil {
			return 0, fmt.Errorf("atomic batch: %w", err)
		}
	}
	m := msg(last)
	m.Header.Set(hdrBatchCommit, "1")
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("atomic batch commit: %w", err)
	}
	var ack struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
		Count int                 `json:"count"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("atomic batch commit: decode acknowledgement: %w", err)
	}
	if ack.Error != nil {
		return 0, translate(ack.Error, kv.ErrConflict)
	}
	if ack.Count != len(datas) || ack.Seq == 0 {
		return 0, fmt.Errorf("atomic batch commit: acknowledged %d of %d messages", ack.Count, len(datas))
	}
	return ack.Seq, nil
}

// JetStream atomic batch headers (nats-server 2.12+; nats.go has no
// constants for them yet).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// Last returns the last message stored on subject and its stream
// sequence; kv.ErrNotFound when the subject holds none.
func (s *Stream) Last(ctx context.Context, subject string) ([]byte, uint64, error) {
	m, err := retry(ctx, func(ctx context.Context, _ bool) (*jetstream.RawStreamMsg, error) {
		return s.s.GetLastMsgForSubject(ctx, subject)
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, 0, kv.ErrNotFound
		}
		return nil, 0, err
	}
	return m.Data, m.Sequence, nil
}

// Scan settings: readBatch is how many messages Read asks for at a time,
// fetchWait how long one such request may wait for them. scanIdle is the
// scan consumer's inactive threshold: the server removes a consumer that
// no request used for that long (one a crashed scanner could not delete;
// also one whose fn dwells that long on a batch, and that scan then
// fails). noRespondersWait bounds how long a scan asks again for messages
// while its consumer is unreachable.
const (
	readBatch        = 512
	fetchWait        = 5 * time.Second
	scanIdle         = time.Minute
	noRespondersWait = 5 * time.Second
)

// Read calls fn with each message stored on subject, in stream order, from
// stream sequence from (0: the first) up
// to the last one stored when Read began (none: no call), and stops at
// fn's first error, which it returns as it is, or when ctx ends. It reads
// through one consumer of its own, created for the scan and deleted when
// the scan ends, however it ends (a consumer a crashed scanner leaves
// behind is removed by the server after scanIdle), readBatch messages a
// round trip.
//
// Through any server of a cluster: the server that created the consumer
// answers before every other server has heard of it (the answer and the
// consumer's interest travel between servers on different routes), so a
// request for messages sent at once through another server can meet "no
// responders"; nothing was delivered then, and Read asks again, within
// noRespondersWait.
func (s *Stream) Read(ctx context.Context, subject string, from uint64, fn func(seq uint64, data []byte) error) error {
	last, err := s.s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if from > last.Sequence {
		return nil
	}
	deliver, start := jetstream.DeliverAllPolicy, uint64(0)
	if from > 1 {
		deliver, start = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     deliver,
		OptStartSeq:       start,
		FilterSubject:     subject,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: scanIdle,
	})
	if err != nil {
		return fmt.Errorf("scan consumer: %w", err)
	}
	defer func() {
		// Also when ctx ended: the consumer is the scan's to remove.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.s.DeleteConsumer(dctx, cons.CachedInfo().Name) //nolint:errcheck // the server removes it after scanIdle
	}()
	var unreachable time.Time // since when requests met no responders
	for {
		done, got, err := s.fetch(ctx, cons, last.Sequence, fn)
		switch {
		case done:
			return nil
		case err != nil && got == 0 && errors.Is(err, nats.ErrNoResponders):
			if unreachable.IsZero() {
				unreachable = time.Now()
			} else if time.Since(unreachable) > noRespondersWait {
				return fmt.Errorf("fetch: scan consumer unreachable for %v: %w", noRespondersWait, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			continue
		case err != nil:
			return err
		case got == 0:
			return fmt.Errorf("stream returned no messages before seq %d", last.Sequence)
		}
		unreachable = time.Time{}
	}
}

// fetch is one request of a scan, waiting for messages up to fetchWait:
// it calls fn with each message cons delivers, up to seq last (done when
// it reached it), and returns how many it got. It stops when ctx ends.
func (s *Stream) fetch(ctx context.Context, cons jetstream.Consumer, last uint64, fn func(seq uint64, data []byte) error) (done bool, got int, err error) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := cons.Fetch(readBatch, jetstream.FetchContext(fctx))
	if err != nil {
		return false, 0, fmt.Errorf("fetch: %w", err)
	}
	for msg := range batch.Messages() {
		if err := ctx.Err(); err != nil {
			return false, got, err
		}
		got++
		md, err := msg.Metadata()
		if err != nil {
			return false, got, fmt.Errorf("metadata: %w", err)
		}
		if err := fn(md.Sequence.Stream, msg.Data()); err != nil {
			return false, got, err
		}
		if md.Sequence.Stream >= last {
			return true, got, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return false, got, err
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) { // the request's own wait ended
		return false, got, fmt.Errorf("fetch: %w", err)
	}
	return false, got, nil
}

// Subjects returns the subjects matching filter that hold a message,
// sorted.
func (s *Stream) Subjects(ctx context.Context, filter string) ([]string, error) {
	info, err := s.s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		out = append(out, subj)
	}
	slices.Sort(out)
	return out, nil
}
