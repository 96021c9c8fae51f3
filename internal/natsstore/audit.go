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

// readBatch is how many messages Read asks for at a time.
const readBatch = 512

// Read calls fn with each message stored on subject, in stream order, up
// to the last one stored when Read began (none: no call), and stops at
// fn's first error, which it returns as it is. It reads through an ordered
// consumer, readBatch messages a round trip (the consumer delivers in
// order and restarts itself on a gap), and deletes the consumer when it
// ends, so reads as frequent as they come leave none behind.
func (s *Stream) Read(ctx context.Context, subject string, fn func(seq uint64, data []byte) error) error {
	last, err := s.s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cons, err := s.s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	// An ordered consumer replaces its server-side consumer on every fetch
	// and deletes the one it replaced: the one to delete is the one it
	// ends with, named when Read returns. (Otherwise each read leaves a
	// consumer until it expires, 5 minutes idle, and the server refuses
	// more than 1,000 on a stream.)
	defer func() {
		_ = s.s.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) //nolint:errcheck // it also expires when idle
	}()
	for {
		batch, err := cons.Fetch(readBatch, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
			if err := fn(md.Sequence.Stream, msg.Data()); err != nil {
				return err
			}
			if md.Sequence.Stream >= last.Sequence {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("stream returned no messages before seq %d", last.Sequence)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
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
