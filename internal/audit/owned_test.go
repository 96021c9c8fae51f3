package audit_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestScanOwned: a principal's pages hold the records of the intents it
// proposed, and only those, whatever the window: not another principal's
// intents, not records of no intent, and not the records of an intent ID
// after another principal proposed it again (an ID freed by a retention)
// or was refused it, nor the records of that ID before its own proposal.
func TestScanOwned(t *testing.T) {
	st := openStore(t, natsstore.Config{DataDir: t.TempDir()})
	l := audit.New(st.Audit)
	acme := tenant.MustParse("acme")
	ctx := context.Background()
	add := func(kind, corr, actor string) {
		if _, err := l.Append(ctx, acme, audit.Entry{Kind: kind, CorrelationID: corr, Actor: actor, Time: t0, Payload: map[string]string{"n": kind + " " + corr + " " + actor}}); err != nil {
			t.Fatal(err)
		}
	}
	add("intent.proposed", "in_b1", "b")  // 1: b's
	add("gate.allowed", "in_b1", "b")     // 2
	add("access.denied", "in_x", "a")     // 3: a refused: no intent of a's
	add("gate.allowed", "in_x", "a")      // 4 (not a's: in_x was refused)
	add("intent.proposed", "in_a1", "a")  // 5: a's
	add("approval.decided", "in_a1", "o") // 6: an operator's vote on a's intent
	add("killswitch.changed", "acme", "o")
	add("intent.proposed", "in_r", "b")   // 8: b's, later freed
	add("intent.proposed", "in_r", "a")   // 9: a's now
	add("gate.allowed", "in_r", "a")      // 10
	add("intent.proposed", "in_r", "b")   // 11: b's again
	add("execution.started", "in_r", "b") // 12
	add("execution.succeeded", "in_a1", "a")
	want := map[string][]uint64{"a": {5, 6, 9, 10, 13}, "b": {1, 2, 8, 11, 12}, "c": nil}
	for who, seqs := range want {
		for _, limit := range []int{1, 2, 3, 5, 100} {
			var got []uint64
			var after uint64
			for {
				next, err := l.ScanOwned(ctx, acme, who, after, limit, func(_ []byte, rec contract.AuditRecord) error {
					got = append(got, rec.Seq)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if next < after || next-after > uint64(limit) {
					t.Fatalf("window after %d of %d ends at %d", after, limit, next)
				}
				if next-after < uint64(limit) {
					break
				}
				after = next
			}
			if fmt.Sprint(got) != fmt.Sprint(seqs) {
				t.Errorf("%s by %d: records %v, want %v", who, limit, got, seqs)
			}
		}
	}
	if _, err := l.ScanOwned(ctx, acme, "a", 0, 0, func([]byte, contract.AuditRecord) error { return nil }); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("ScanOwned without a limit: %v", err)
	}
	// One intent's records: all of them for an overseer (principal ""),
	// a principal's only while the intent ID is its own.
	for _, tt := range []struct {
		intent, principal string
		want              []uint64
	}{
		{"in_r", "", []uint64{8, 9, 10, 11, 12}},
		{"in_r", "a", []uint64{9, 10}},
		{"in_r", "b", []uint64{8, 11, 12}},
		{"in_x", "a", nil},
		{"in_a1", "a", []uint64{5, 6, 13}},
		{"in_a1", "b", nil},
	} {
		for _, limit := range []int{1, 2, 100} {
			var got []uint64
			var after uint64
			for {
				n := 0
				next, err := l.ScanIntent(ctx, acme, tt.intent, tt.principal, after, limit, func(_ []byte, rec contract.AuditRecord) error {
					got = append(got, rec.Seq)
					n++
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if n < limit {
					break
				}
				after = next
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("%s of %q by %d: %v, want %v", tt.intent, tt.principal, limit, got, tt.want)
			}
		}
	}
}
