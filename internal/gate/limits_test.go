package gate_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/natsstore/natsstoretest"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// smallNode is a node on an external NATS server that accepts messages of
// at most natsstore.MinMaxPayload bytes, whose gate is given that limit as
// the store's max record size.
func smallNode(tb testing.TB, ex gate.Executors) *node {
	tb.Helper()
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: tb.TempDir(), MaxPayload: natsstore.MinMaxPayload})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	st, err := natsstore.Open(context.Background(), natsstore.Config{NATSURL: srv.ClientURL()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	sw := &switches{}
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Executors: ex, Switches: sw,
		Approvals: approval.NewStore(st.Approvals, log, nil, nil), Work: st.Work, Now: c.Now, Node: "test", MaxRecord: st.MaxPayload()})
	if err != nil {
		tb.Fatal(err)
	}
	return &node{st, log, g, sw}
}

// requireRecordsFit fails unless every audit record of acme and every
// value of the intents and idempotency buckets is within max bytes, and
// the chain verifies.
func requireRecordsFit(tb testing.TB, n *node, max int64) {
	tb.Helper()
	ctx := context.Background()
	if err := n.log.Scan(ctx, acme, 0, 0, func(raw []byte, r contract.AuditRecord) error {
		if int64(len(raw)) > max {
			tb.Errorf("audit record %d (%s) takes %d bytes, more than %d", r.Seq, r.Kind, len(raw), max)
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	natsstoretest.RequireValuesFit(tb, max, ">", n.st.Intents, n.st.Idempotency)
	replayPasses(tb, n.log, acme)
}

// huge is an executor whose output and error ignore every limit: many
// keys, values that escape to six times their size, a long error.
type huge struct{ fail bool }

func (h huge) Lookup(string) (gate.Executor, bool) { return h, true }

func (h huge) Run(context.Context, *gate.Permit) (map[string]string, error) {
	out := map[string]string{"small": "kept", "content": strings.Repeat("<&>", 200<<10)}
	for i := range 200 {
		out["k"+strconv.Itoa(i)] = strings.Repeat("\x01", 64)
	}
	if h.fail {
		return out, errors.New(strings.Repeat("\"error\" ", 10<<10))
	}
	return out, nil
}

// TestOutputTooLargeIsCutNotRefused: an executor whose output and error
// would make records several times the store's max_payload: the
// execution is recorded like any other (succeeded or failed, not 503, not
// in doubt), its output cut to the record budget and marked truncated,
// its error to gate.MaxErrorBytes; every record fits, the chain verifies.
func TestOutputTooLargeIsCutNotRefused(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run("fail="+strconv.FormatBool(fail), func(t *testing.T) {
			n := smallNode(t, huge{fail: fail})
			ctx := context.Background()
			v, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "huge"}, gate.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			if err != nil {
				t.Fatalf("execute: %v", err)
			}
			res := out.Result
			want := contract.StatusSucceeded
			if fail {
				want = contract.StatusFailed
			}
			if res.Status != want {
				t.Fatalf("status %s, want %s", res.Status, want)
			}
			if res.Output[gate.OutputTruncated] != "true" || res.Output["small"] != "kept" {
				t.Fatalf("output not marked truncated, or a small value was cut: truncated=%q small=%q", res.Output[gate.OutputTruncated], res.Output["small"])
			}
			budget := gate.RecordBudget(n.st.MaxPayload())
			if size := gate.OutputSize(res.Output); size > budget {
				t.Fatalf("output takes %d bytes, more than the budget %d", size, budget)
			}
			if fail && (contract.JSONLen(res.Error) > gate.MaxErrorBytes || !strings.HasSuffix(res.Error, "[truncated]")) {
				t.Fatalf("error takes %d bytes (want at most %d, marked)", contract.JSONLen(res.Error), gate.MaxErrorBytes)
			}
			got, err := n.gate.Get(ctx, acme, v.Intent.ID)
			if err != nil || got.State != want || got.Result == nil || got.Result.Output[gate.OutputTruncated] != "true" {
				t.Fatalf("stored view %s, %v", got.State, err)
			}
			requireRecordsFit(t, n, n.st.MaxPayload())
		})
	}
}

// TestProposalTooLargeIsRefusedBeforeAnyWrite: a proposal whose records
// would not fit the store's max_payload is refused with body_too_large
// and reason record_too_large, and nothing is written: no audit record, no
// intent. One that fits, just below, is stored.
func TestProposalTooLargeIsRefusedBeforeAnyWrite(t *testing.T) {
	n := smallNode(t, &recorder{runs: map[string]int{}})
	ctx := context.Background()
	budget := int(gate.RecordBudget(n.st.MaxPayload()))
	tests := []struct {
		name    string
		params  map[string]string
		refused bool
	}{
		{"plain text over the budget", map[string]string{"content": strings.Repeat("x", budget)}, true},
		{"larger than any record", map[string]string{"content": strings.Repeat("x", 2*budget)}, true},
		{"quotes that escape past it", map[string]string{"content": strings.Repeat(`"`, budget*3/5)}, true},
		{"spread over many params", map[string]string{"a": strings.Repeat("x", budget/2), "b": strings.Repeat("x", budget/2)}, true},
		{"well within", map[string]string{"content": strings.Repeat("<", budget/8)}, false},
		{"just within, then executed", map[string]string{"content": strings.Repeat("x", budget-4<<10)}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(kinds(t, n.log, acme))
			req := contract.IntentRequest{Action: "fs.write", Target: "a.txt", Params: tt.params, IdempotencyKey: "big-" + strconv.Itoa(i)}
			v, created, err := n.gate.Propose(ctx, acme, agent, req, gate.Meta{})
			if !tt.refused {
				if err != nil || !created {
					t.Fatalf("propose: %v, created %v", err, created)
				}
				// Its decision at execute, the approval and the outcome fit too.
				approve(t, n, v.Intent.ID)
				if out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil || out.Result.Status != contract.StatusSucceeded {
					t.Fatalf("execute: %s, %v", out.Result.Status, err)
				}
				requireRecordsFit(t, n, n.st.MaxPayload())
				return
			}
			var ce *contract.Error
			if !errors.As(err, &ce) || ce.Code != contract.CodeTooLarge || len(ce.Reasons) != 1 || ce.Reasons[0] != gate.ReasonRecordTooLarge {
				t.Fatalf("propose = %v, %v; want body_too_large (%s)", v.Intent.ID, err, gate.ReasonRecordTooLarge)
			}
			t.Log(ce.Message)
			if after := len(kinds(t, n.log, acme)); after != before {
				t.Fatalf("%d audit records written by a refused proposal", after-before)
			}
			if _, err := n.st.Intents.Get(ctx, tenant.IntentKey(acme, gate.IntentID(acme, req.IdempotencyKey))); !errors.Is(err, kv.ErrNotFound) {
				t.Fatalf("a refused proposal stored its intent: %v", err)
			}
		})
	}
}
