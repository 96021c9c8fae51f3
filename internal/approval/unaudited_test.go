package approval_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// leavingAudit is the audit log of a caller that goes away (or whose
// stream fails) just as the vote's record is appended.
type leavingAudit struct {
	*audit.Log
	leave func() // cancels the caller's context
	fail  bool
}

func (l *leavingAudit) Append(ctx context.Context, t tenant.ID, e audit.Entry) (contract.AuditRecord, error) {
	if e.Kind == approval.KindRequested {
		return l.Log.Append(ctx, t, e)
	}
	if l.leave != nil {
		l.leave()
	}
	if l.fail {
		return contract.AuditRecord{}, errors.New("audit stream leader lost (injected)")
	}
	return l.Log.Append(ctx, t, e)
}

// TestVoteRecordOutlivesTheCaller: once a vote is stored, its audit record
// is written even if the caller goes away; if it cannot be written the
// answer is ErrUnaudited (the vote stands), never a plain failure that
// reads as "nothing was changed".
func TestVoteRecordOutlivesTheCaller(t *testing.T) {
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	acme := tenant.MustParse("acme")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	proposer := principal("key_bot", "bot-team", auth.RoleAgent, "*")
	op := principal("key_op", "olga", auth.RoleOperator, "*")
	for _, c := range []struct {
		name string
		fail bool
	}{{"caller leaves", false}, {"audit fails", true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			la := &leavingAudit{Log: log, leave: cancel, fail: c.fail}
			s := approval.NewStore(st.Approvals, la, nil, nil)
			id := "in_0000000000000000000000000000000" + map[bool]string{false: "1", true: "2"}[c.fail]
			in := contract.ActionIntent{ID: id, Tenant: "acme", Action: "fs.write", Class: contract.A1, Proposer: proposer.ID, Hash: "h"}
			if err := s.Request(context.Background(), acme, in, proposer, "r", now); err != nil {
				t.Fatal(err)
			}
			rec, err := s.Decide(ctx, acme, approval.Ballot{Intent: in, Principal: op, Decision: "approve", Reason: "ok", Now: now})
			if c.fail {
				if !errors.Is(err, approval.ErrUnaudited) || rec.Status != approval.StatusApproved {
					t.Fatalf("vote with a failing audit: %v %s, want ErrUnaudited with the vote standing", err, rec.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("vote whose caller left after the write: %v", err)
			}
			var kinds []string
			if err := log.Scan(context.Background(), acme, 0, 0, func(_ []byte, r contract.AuditRecord) error {
				if r.CorrelationID == id {
					kinds = append(kinds, r.Kind)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(kinds) != 2 || kinds[1] != approval.KindGranted {
				t.Fatalf("records of the vote: %v, want the request and the grant", kinds)
			}
		})
	}
}
