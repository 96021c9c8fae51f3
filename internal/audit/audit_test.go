package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// natsServer starts a real NATS+JetStream server on a random loopback port.
func natsServer(tb testing.TB) string {
	tb.Helper()
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: tb.TempDir(), Port: 0})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

func openStore(tb testing.TB, cfg natsstore.Config) *natsstore.Store {
	tb.Helper()
	st, err := natsstore.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

func scanAll(tb testing.TB, l *audit.Log, t tenant.ID) [][]byte {
	tb.Helper()
	var out [][]byte
	if err := l.Scan(context.Background(), t, 0, 0, func(raw []byte, _ contract.AuditRecord) error {
		out = append(out, bytes.Clone(raw))
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

func verifyAll(tb testing.TB, tn string, recs [][]byte) {
	tb.Helper()
	v := audit.NewVerifier(tn)
	for i, raw := range recs {
		if _, err := v.Next(raw); err != nil {
			tb.Fatalf("record %d: %v", i+1, err)
		}
	}
}

// TestConcurrentWritersTwoConnections: two independent connections (as two
// server processes would have) append to one tenant chain concurrently,
// each with or without group commit; the chain stays linear and verifies,
// no record is lost, every Append returned the record exactly as stored,
// and with group commit records really went in shared batches.
func TestConcurrentWritersTwoConnections(t *testing.T) {
	for _, tt := range []struct {
		name   string
		groups [2]bool
	}{{"plain", [2]bool{false, false}}, {"group commit", [2]bool{true, true}}, {"mixed", [2]bool{true, false}}} {
		t.Run(tt.name, func(t *testing.T) {
			url := natsServer(t)
			a := openStore(t, natsstore.Config{NATSURL: url, Name: "a"})
			b := openStore(t, natsstore.Config{NATSURL: url, Name: "b"})
			logs := []*audit.Log{audit.New(a.Audit), audit.New(b.Audit)}
			for i, g := range tt.groups {
				if g {
					logs[i].EnableGroupCommit()
				}
			}
			acme := tenant.MustParse("acme")
			const writers, perWriter = 16, 25
			var wg sync.WaitGroup
			errs := make(chan error, writers*perWriter)
			returned := make(chan contract.AuditRecord, writers*perWriter)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := logs[w%2]
					for i := range perWriter {
						rec, err := l.Append(context.Background(), acme, audit.Entry{
							Kind: "test.event", CorrelationID: fmt.Sprintf("w%d-%d", w, i), Actor: "tester", Time: t0,
							Payload: map[string]any{"writer": w, "i": i},
						})
						if err != nil {
							errs <- err
							continue
						}
						returned <- rec
					}
				}()
			}
			wg.Wait()
			close(errs)
			close(returned)
			for err := range errs {
				t.Fatal(err)
			}
			recs := scanAll(t, logs[0], acme)
			if len(recs) != writers*perWriter {
				t.Fatalf("got %d records, want %d", len(recs), writers*perWriter)
			}
			verifyAll(t, "acme", recs)
			for rec := range returned {
				stored, err := rec.AppendCanonical(nil)
				if err != nil || !bytes.Equal(stored, recs[rec.Seq-1]) {
					t.Fatalf("Append returned seq %d %s, stored %s", rec.Seq, stored, recs[rec.Seq-1])
				}
			}
			seq, _, err := logs[1].Head(context.Background(), acme)
			if err != nil || seq != writers*perWriter {
				t.Fatalf("Head = %d, %v", seq, err)
			}
			batched := 0
			for sseq := uint64(1); sseq <= uint64(len(recs)); sseq++ {
				m, err := a.Audit.Stream().GetMsg(context.Background(), sseq)
				if err != nil {
					t.Fatal(err)
				}
				if m.Header.Get("Nats-Batch-Id") != "" {
					batched++
				}
			}
			if grouped := tt.groups[0] || tt.groups[1]; grouped != (batched > 0) {
				t.Fatalf("%d of %d records were written in batches (group commit %v)", batched, len(recs), tt.groups)
			}
			t.Logf("%d of %d records written in shared batches", batched, len(recs))
		})
	}
}

func TestChainsArePerTenantAndSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(st.Audit)
	a, b := tenant.MustParse("a"), tenant.MustParse("b")
	for i := range 3 {
		for _, tn := range []tenant.ID{a, b} {
			if _, err := l.Append(context.Background(), tn, audit.Entry{Kind: "k", Time: t0, Payload: map[string]int{"i": i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st.Close()
	st = openStore(t, natsstore.Config{DataDir: dir})
	l = audit.New(st.Audit)
	for _, tn := range []tenant.ID{a, b} {
		recs := scanAll(t, l, tn)
		if len(recs) != 3 {
			t.Fatalf("%s: %d records after reopen", tn, len(recs))
		}
		verifyAll(t, tn.String(), recs)
	}
	// Appending after reopen continues the chain.
	rec, err := l.Append(context.Background(), a, audit.Entry{Kind: "k", Time: t0, Payload: map[string]int{}})
	if err != nil || rec.Seq != 4 {
		t.Fatalf("append after reopen: seq %d, %v", rec.Seq, err)
	}
	tenants, err := l.Tenants(context.Background())
	if err != nil || len(tenants) != 2 || tenants[0] != a || tenants[1] != b {
		t.Fatalf("Tenants = %v, %v", tenants, err)
	}
	// after/limit paging.
	var seqs []uint64
	if err := l.Scan(context.Background(), a, 1, 2, func(_ []byte, r contract.AuditRecord) error { seqs = append(seqs, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[2 3]" {
		t.Fatalf("Scan(after=1, limit=2) = %v", seqs)
	}
}

// TestScanManyTimesQuickly: scans as frequent as a polling client makes
// them keep working; each used to leave a consumer on the stream until it
// expired, and the 1,001st within five minutes was refused ("maximum
// consumers limit reached").
func TestScanManyTimesQuickly(t *testing.T) {
	st := openStore(t, natsstore.Config{DataDir: t.TempDir()})
	l := audit.New(st.Audit)
	acme := tenant.MustParse("acme")
	for i := range 3 {
		if _, err := l.Append(context.Background(), acme, audit.Entry{Kind: "k", Time: t0, Payload: map[string]int{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	want := scanAll(t, l, acme)
	for i := range 1100 { // more than the server's 1,000 consumers per stream
		var got [][]byte
		if err := l.Scan(context.Background(), acme, 1, 0, func(raw []byte, _ contract.AuditRecord) error {
			got = append(got, raw)
			return nil
		}); err != nil {
			t.Fatalf("scan %d: %v", i+1, err)
		}
		if len(got) != 2 || !bytes.Equal(got[0], want[1]) || !bytes.Equal(got[1], want[2]) {
			t.Fatalf("scan %d returned %d records, not records 2 and 3", i+1, len(got))
		}
	}
}

func TestAppendRequiresTenant(t *testing.T) {
	st := openStore(t, natsstore.Config{DataDir: t.TempDir()})
	l := audit.New(st.Audit)
	if _, err := l.Append(context.Background(), tenant.ID{}, audit.Entry{Kind: "k", Time: t0}); !errors.Is(err, tenant.ErrMissing) {
		t.Fatalf("Append without tenant = %v, want ErrMissing", err)
	}
}

func TestVerifierNamesTamperedRecord(t *testing.T) {
	st := openStore(t, natsstore.Config{DataDir: t.TempDir()})
	l := audit.New(st.Audit)
	acme := tenant.MustParse("acme")
	for i := range 5 {
		if _, err := l.Append(context.Background(), acme, audit.Entry{Kind: "k", Actor: "x", Time: t0, Payload: map[string]string{"v": fmt.Sprint("value-", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	recs := scanAll(t, l, acme)
	verifyAll(t, "acme", recs)
	tests := []struct {
		name   string
		mutate func([][]byte) [][]byte
		seq    uint64
	}{
		{"flip a payload byte", func(r [][]byte) [][]byte {
			r[2] = bytes.Replace(r[2], []byte("value-2"), []byte("value-X"), 1)
			return r
		}, 3},
		{"drop a record", func(r [][]byte) [][]byte { return append(r[:1:1], r[2:]...) }, 2},
		{"swap two records", func(r [][]byte) [][]byte { r[1], r[2] = r[2], r[1]; return r }, 2},
		{"add whitespace", func(r [][]byte) [][]byte { r[3] = append([]byte(" "), r[3]...); return r }, 4},
		{"case of a key", func(r [][]byte) [][]byte {
			r[4] = bytes.Replace(r[4], []byte(`"actor"`), []byte(`"Actor"`), 1)
			return r
		}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := make([][]byte, len(recs))
			for i := range recs {
				cp[i] = bytes.Clone(recs[i])
			}
			cp = tt.mutate(cp)
			v := audit.NewVerifier("acme")
			var verr *audit.VerifyError
			for _, raw := range cp {
				if _, err := v.Next(raw); err != nil {
					if !errors.As(err, &verr) || !errors.Is(err, audit.ErrChainBroken) {
						t.Fatalf("error %v is not a VerifyError", err)
					}
					break
				}
			}
			if verr == nil || verr.Seq != tt.seq {
				t.Fatalf("VerifyError = %v, want record %d named", verr, tt.seq)
			}
		})
	}
}

// BenchmarkAppendParallel: 64 writers appending to one tenant's chain
// through one embedded server (the shape of the load test's hot path).
func BenchmarkAppendParallel(b *testing.B) {
	st := openStore(b, natsstore.Config{DataDir: b.TempDir()})
	l := audit.New(st.Audit)
	tn := tenant.MustParse("acme")
	payload := map[string]any{"input": map[string]any{"action": "fs.read", "target": "bench.txt"}, "reasons": []string{"ok"}}
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(context.Background(), tn, audit.Entry{Kind: audit.KindGateAllowed, Actor: "bench", Time: t0, Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	verifyAll(b, "acme", scanAll(b, l, tn))
}

// BenchmarkGroupCommitLever measures the lever group commit would use:
// JetStream's atomic batch publish (the first message carries the chain's
// expected last subject sequence, the batch commits all or nothing) against
// one acknowledged publish per record, on a file stream, with and without
// fsync on every write. Figures are in docs/PERFORMANCE.md.
func BenchmarkGroupCommitLever(b *testing.B) {
	for _, sync := range []bool{false, true} {
		for _, n := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%v/records=%d", sync, n), func(b *testing.B) {
				srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: b.TempDir(), DontListen: true, SyncAlways: sync})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(srv.Shutdown)
				nc, err := nats.Connect("", nats.InProcessServer(srv.Server))
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				js, _ := jetstream.New(nc)
				ctx := context.Background()
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEVER", Subjects: []string{"lever.>"},
					Storage: jetstream.FileStorage, AllowAtomicPublish: true}); err != nil {
					b.Fatal(err)
				}
				payload := bytes.Repeat([]byte("x"), 1500) // about one decision record
				var last uint64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if n == 1 {
						ack, err := js.Publish(ctx, "lever.t", payload, jetstream.WithExpectLastSequencePerSubject(last), jetstream.WithMsgID(fmt.Sprint(i)))
						if err != nil {
							b.Fatal(err)
						}
						last = ack.Sequence
						continue
					}
					id := fmt.Sprintf("b%d", i)
					for j := 0; j < n; j++ {
						m := nats.NewMsg("lever.t")
						m.Data = payload
						m.Header.Set("Nats-Batch-Id", id)
						m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j+1))
						m.Header.Set("Nats-Msg-Id", fmt.Sprint(i, "-", j))
						if j == 0 {
							m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(last, 10))
						}
						if j < n-1 {
							if err := nc.PublishMsg(m); err != nil {
								b.Fatal(err)
							}
							continue
						}
						m.Header.Set("Nats-Batch-Commit", "1")
						resp, err := nc.RequestMsg(m, 10*time.Second)
						if err != nil {
							b.Fatal(err)
						}
						var ack struct {
							Error *jetstream.APIError `json:"error"`
							Seq   uint64              `json:"seq"`
							Count int                 `json:"count"`
						}
						if err := json.Unmarshal(resp.Data, &ack); err != nil || ack.Error != nil || ack.Count != n {
							b.Fatalf("batch commit: %s", resp.Data)
						}
						last = ack.Seq
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// lostAnswer is a stream whose next publish is stored, and then answered
// as the store's retry of it would be after its first answer was lost
// (a leader change): a conflict.
type lostAnswer struct {
	audit.Stream
	lose bool
}

func (s *lostAnswer) Publish(ctx context.Context, subject string, data []byte, id string, expect uint64) (uint64, bool, error) {
	seq, dup, err := s.Stream.Publish(ctx, subject, data, id, expect)
	if err == nil && s.lose {
		s.lose = false
		_, _, err = s.Stream.Publish(ctx, subject, data, id, expect) // the retry: refused by its own first attempt
	}
	return seq, dup, err
}

// TestAppendWhoseAnswerWasLost: a record stored while its answer was lost
// (the retry conflicts with it) is appended once, not again at the next
// position.
func TestAppendWhoseAnswerWasLost(t *testing.T) {
	st := openStore(t, natsstore.Config{DataDir: t.TempDir()})
	s := &lostAnswer{Stream: st.Audit}
	l := audit.New(s)
	acme := tenant.MustParse("acme")
	ctx := context.Background()
	if _, err := l.Append(ctx, acme, audit.Entry{Kind: "k.first", Time: t0}); err != nil {
		t.Fatal(err)
	}
	s.lose = true
	if _, err := l.Append(ctx, acme, audit.Entry{Kind: "k.lost", Time: t0}); err != nil {
		t.Fatalf("append whose answer was lost: %v", err)
	}
	if _, err := l.Append(ctx, acme, audit.Entry{Kind: "k.after", Time: t0}); err != nil {
		t.Fatal(err)
	}
	recs := scanAll(t, l, acme)
	var kinds []string
	for _, raw := range recs {
		var r contract.AuditRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, r.Kind)
	}
	if fmt.Sprint(kinds) != "[k.first k.lost k.after]" {
		t.Fatalf("chain = %v, want each record once", kinds)
	}
	verifyAll(t, "acme", recs)
}
