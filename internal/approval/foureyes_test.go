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

// newStore is an approval store on a real embedded JetStream store.
func newStore(t testing.TB) *approval.Store {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return approval.NewStore(st.Approvals, audit.New(st.Audit), nil, nil)
}

func principal(id, owner, role string, actions ...string) *auth.Principal {
	return &auth.Principal{ID: id, Name: id, Owner: owner, Role: role, Tenants: []string{"acme"}, Actions: actions, CreatedBy: "key_admin"}
}

// TestFourEyesMeansTwoPeople is break 2 of issue 13: an operator whose key
// granted only A0 cast a vote that counted toward an A3 approval, and two
// keys of one person counted as two approvers.
func TestFourEyesMeansTwoPeople(t *testing.T) {
	ctx := context.Background()
	acme := tenant.MustParse("acme")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	proposer := principal("key_bot", "bot-team", auth.RoleAgent, "*")
	in := contract.ActionIntent{ID: "in_00000000000000000000000000000001", Tenant: "acme", Action: "fs.delete", Class: contract.A3, Proposer: proposer.ID, Hash: "h"}
	s := newStore(t)
	if err := s.Request(ctx, acme, in, proposer, "", now); err != nil {
		t.Fatal(err)
	}
	vote := func(p *auth.Principal) (approval.Record, error) {
		return s.Decide(ctx, acme, approval.Ballot{Intent: in, Principal: p, Decision: "approve", Reason: "ok", Now: now})
	}
	// (b) A0 only: refused, and nothing is recorded.
	if _, err := vote(principal("key_reader_op", "carol", auth.RoleOperator, "A0")); !errors.Is(err, approval.ErrNotEntitled) {
		t.Fatalf("an A0 operator's vote on an A3 action: %v, want ErrNotEntitled", err)
	}
	// A credential of the proposer's owner: refused.
	if _, err := vote(principal("key_bot_op", "bot-team", auth.RoleOperator, "*")); !errors.Is(err, approval.ErrSelfApproval) {
		t.Fatalf("the proposer's owner's operator key: %v, want ErrSelfApproval", err)
	}
	// (c) Two keys of alice: the second is refused.
	if r, err := vote(principal("key_alice1", "alice", auth.RoleOperator, "A3")); err != nil || r.Status != approval.StatusPending {
		t.Fatalf("alice's first vote: %+v, %v", r, err)
	}
	if _, err := vote(principal("key_alice2", "alice", auth.RoleAdmin, "*")); !errors.Is(err, approval.ErrAlreadyVoted) {
		t.Fatalf("alice's second key: %v, want ErrAlreadyVoted", err)
	}
	rd, err := s.Read(ctx, acme, in.ID)
	if err != nil || rd.Status != approval.StatusPending || approval.Distinct(rd) != 1 {
		t.Fatalf("after alice's votes: %+v (%v), want pending with 1 distinct owner", rd, err)
	}
	// A second person completes it; the lineage names both.
	if r, err := vote(principal("key_bob", "bob", auth.RoleOperator, "fs.delete")); err != nil || r.Status != approval.StatusApproved {
		t.Fatalf("bob's vote: %+v, %v", r, err)
	}
	lin, err := s.Lineage(ctx, acme, in.ID)
	if err != nil || len(lin) != 2 || lin[0].Owner == lin[1].Owner || lin[1].CreatedBy != "key_admin" {
		t.Fatalf("lineage = %+v, %v", lin, err)
	}
}

// TestDistinct: the counting rule on readings, with and without owners.
func TestDistinct(t *testing.T) {
	cases := []struct {
		name string
		r    approval.Reading
		want int
	}{
		{"two owners", approval.Reading{Proposer: "p", ProposerOwner: "o:p", Approvers: []string{"a", "b"}, ApproverOwners: []string{"o:a", "o:b"}}, 2},
		{"one owner, two keys", approval.Reading{Proposer: "p", ProposerOwner: "o:p", Approvers: []string{"a", "b"}, ApproverOwners: []string{"o:a", "o:a"}}, 1},
		{"the proposer's owner", approval.Reading{Proposer: "p", ProposerOwner: "o:p", Approvers: []string{"a", "b"}, ApproverOwners: []string{"o:p", "o:b"}}, 1},
		{"the proposer's key", approval.Reading{Proposer: "p", ProposerOwner: "o:p", Approvers: []string{"p", "b"}, ApproverOwners: []string{"o:x", "o:b"}}, 1},
		{"before owners: IDs", approval.Reading{Proposer: "p", Approvers: []string{"a", "b", "a", "p"}}, 2},
		{"owners that do not line up: IDs", approval.Reading{Proposer: "p", ProposerOwner: "o:p", Approvers: []string{"a", "b"}, ApproverOwners: []string{"o:a"}}, 2},
	}
	for _, c := range cases {
		if got := approval.Distinct(c.r); got != c.want {
			t.Errorf("%s: Distinct = %d, want %d", c.name, got, c.want)
		}
	}
}
