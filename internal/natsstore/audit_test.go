package natsstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// The adapter implements what the audit log declares it needs (natsstore
// itself imports no domain package, so the check is here).
var _ audit.Stream = (*natsstore.Stream)(nil)

func openStore(t *testing.T) *natsstore.Store {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// read collects what Stream.Read delivers of subject.
func read(t *testing.T, s *natsstore.Stream, subject string) (seqs []uint64, datas []string) {
	t.Helper()
	if err := s.Read(context.Background(), subject, 0, func(seq uint64, data []byte) error {
		seqs, datas = append(seqs, seq), append(datas, string(data))
		return nil
	}); err != nil {
		t.Fatalf("Read(%s): %v", subject, err)
	}
	return seqs, datas
}

// TestStreamConformance is the contract of audit.Stream, run on the
// adapter over the audit stream of a real embedded NATS.
func TestStreamConformance(t *testing.T) {
	ctx := context.Background()
	s := openStore(t).Audit
	a, b := tenant.AuditSubject(tenant.MustParse("conf-a")), tenant.AuditSubject(tenant.MustParse("conf-b"))

	t.Run("an empty subject", func(t *testing.T) {
		if _, _, err := s.Last(ctx, a); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Last of an empty subject = %v, want kv.ErrNotFound", err)
		}
		if seqs, _ := read(t, s, a); len(seqs) != 0 {
			t.Fatalf("Read of an empty subject delivered %v", seqs)
		}
	})

	var s1, s2 uint64
	t.Run("publish, expected sequence, dedupe", func(t *testing.T) {
		var dup bool
		var err error
		if s1, dup, err = s.Publish(ctx, a, []byte("one"), "id-1", 0); err != nil || dup || s1 == 0 {
			t.Fatalf("first publish = seq %d dup %v, %v", s1, dup, err)
		}
		// A stored message ID again: nothing stored, the first sequence
		// reported. (The server checks the expected sequence first: the
		// duplicate is reported over the current last sequence.)
		if seq, dup, err := s.Publish(ctx, a, []byte("one"), "id-1", s1); err != nil || !dup || seq != s1 {
			t.Fatalf("publish of a stored message ID = seq %d dup %v, %v; want seq %d, duplicate", seq, dup, err, s1)
		}
		for _, expect := range []uint64{0, s1 + 1000} {
			if _, _, err := s.Publish(ctx, a, []byte("stale"), "id-stale", expect); !errors.Is(err, kv.ErrConflict) {
				t.Fatalf("publish expecting %d (last is %d) = %v, want kv.ErrConflict", expect, s1, err)
			}
		}
		// Another subject's sequence is its own.
		if _, _, err := s.Publish(ctx, b, []byte("b-one"), "id-b1", 0); err != nil {
			t.Fatalf("first publish to another subject: %v", err)
		}
		if s2, dup, err = s.Publish(ctx, a, []byte("two"), "id-2", s1); err != nil || dup || s2 <= s1 {
			t.Fatalf("publish over the last sequence = seq %d dup %v, %v", s2, dup, err)
		}
		if data, seq, err := s.Last(ctx, a); err != nil || string(data) != "two" || seq != s2 {
			t.Fatalf("Last = %q seq %d, %v; want two seq %d", data, seq, err, s2)
		}
	})

	t.Run("atomic batch", func(t *testing.T) {
		datas := [][]byte{[]byte("three"), []byte("four"), []byte("five")}
		ids := []string{"batch-first-message-id-longer-than-32-characters", "id-4", "id-5"}
		if _, err := s.PublishBatch(ctx, a, datas, ids, s1); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("batch expecting a stale sequence = %v, want kv.ErrConflict", err)
		}
		if _, seq, _ := s.Last(ctx, a); seq != s2 {
			t.Fatalf("a refused batch stored something: last seq %d, want %d", seq, s2)
		}
		last, err := s.PublishBatch(ctx, a, datas, ids, s2)
		if err != nil || last != s2+3 {
			t.Fatalf("batch over the last sequence = last seq %d, %v; want %d", last, err, s2+3)
		}
		for i := range datas {
			m, err := s.Stream().GetMsg(ctx, s2+1+uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Data) != string(datas[i]) || m.Header.Get("Nats-Msg-Id") != ids[i] || m.Header.Get("Nats-Batch-Id") != ids[0][:32] {
				t.Fatalf("batch message %d: %q, headers %v", i, m.Data, m.Header)
			}
		}
		if _, err := s.PublishBatch(ctx, a, datas, ids[:2], last); err == nil || errors.Is(err, kv.ErrConflict) {
			t.Fatalf("batch with an ID missing = %v, want a usage error", err)
		}
	})

	t.Run("read: order and bounds", func(t *testing.T) {
		seqs, datas := read(t, s, a)
		if !slices.Equal(datas, []string{"one", "two", "three", "four", "five"}) || !slices.IsSorted(seqs) || seqs[0] != s1 {
			t.Fatalf("Read = %v at %v; want subject a's messages only, in order", datas, seqs)
		}
		// A message stored while Read runs is after its bound.
		var during []string
		if err := s.Read(ctx, a, 0, func(seq uint64, data []byte) error {
			if seq == s1 {
				if _, _, err := s.Publish(ctx, a, []byte("six"), "id-6", seqs[len(seqs)-1]); err != nil {
					return err
				}
			}
			during = append(during, string(data))
			return nil
		}); err != nil || len(during) != 5 {
			t.Fatalf("Read while publishing = %v, %v; want the 5 messages stored when it began", during, err)
		}
		// fn's error ends the read and comes back as it is.
		stop := errors.New("stop")
		n := 0
		if err := s.Read(ctx, a, 0, func(uint64, []byte) error { n++; return stop }); err != stop || n != 1 { //nolint:errorlint // returned as it is
			t.Fatalf("Read with fn failing = %v after %d calls; want fn's error after 1", err, n)
		}
	})

	t.Run("read beyond one batch", func(t *testing.T) {
		c := tenant.AuditSubject(tenant.MustParse("conf-c"))
		var last uint64
		var want []string
		for i := range 600 { // more than one fetch (512)
			d := fmt.Sprint("m", i)
			seq, _, err := s.Publish(ctx, c, []byte(d), d, last)
			if err != nil {
				t.Fatal(err)
			}
			last, want = seq, append(want, d)
		}
		if _, got := read(t, s, c); !slices.Equal(got, want) {
			t.Fatalf("Read of 600 messages delivered %d, in order %v", len(got), slices.Equal(got, want))
		}
	})

	t.Run("reads leave no consumer behind", func(t *testing.T) {
		// Each read deletes its consumer before it returns, also one cut
		// short by fn's error.
		for i := range 50 {
			var err error
			if i%2 == 0 {
				read(t, s, a)
			} else {
				err = s.Read(ctx, a, 0, func(uint64, []byte) error { return errors.New("stop") })
			}
			info, ierr := s.Stream().Info(ctx)
			if ierr != nil {
				t.Fatal(ierr)
			}
			if info.State.Consumers != 0 {
				t.Fatalf("%d consumers on the stream after read %d (%v)", info.State.Consumers, i, err)
			}
		}
	})

	t.Run("subjects", func(t *testing.T) {
		got, err := s.Subjects(ctx, tenant.AuditSubjects)
		want := []string{a, b, tenant.AuditSubject(tenant.MustParse("conf-c"))}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Subjects = %v, %v; want %v", got, err, want)
		}
		if got, err := s.Subjects(ctx, b); err != nil || !slices.Equal(got, []string{b}) {
			t.Fatalf("Subjects(%s) = %v, %v", b, got, err)
		}
	})
}
