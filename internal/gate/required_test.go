package gate

import (
	"slices"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// TestDecideUsesTheRecordedNumber: how many approvals an intent needs is
// part of the decision's input (approval.Reading.Required, from the
// declared rules), so a decision replays the same under any later rules;
// an input recorded before the number was (Required 0) is decided under
// the floor the built-in rules asked then.
func TestDecideUsesTheRecordedNumber(t *testing.T) {
	bundle := policy.Default()
	for _, c := range []struct {
		name      string
		class     string
		required  int
		approvers []string
		want      string
	}{
		{"A1 recorded before the number: one", contract.A1, 0, []string{"key_op"}, contract.Allow},
		{"A1 declared two, one given", contract.A1, 2, []string{"key_op"}, contract.Deny},
		{"A1 declared two, two given", contract.A1, 2, []string{"key_op", "key_op2"}, contract.Allow},
		{"A3 recorded before the number: two", contract.A3, 0, []string{"key_op"}, contract.Deny},
		{"A3 declared three, two given", contract.A3, 3, []string{"key_op", "key_op2"}, contract.Deny},
		{"A3 declared three, three given", contract.A3, 3, []string{"key_op", "key_op2", "key_op3"}, contract.Allow},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := baseInput()
			in.Intent.Class = c.class
			if c.class == contract.A3 {
				in.Intent.Action = "fs.delete"
			}
			in.Intent.Hash, _ = in.Intent.ComputeHash()
			in.Approval.IntentHash = in.Intent.Hash
			in.Approval.Required, in.Approval.Approvers = c.required, c.approvers
			d := Decide(in, bundle, action.Builtin())
			if d.Verdict != c.want {
				t.Fatalf("verdict %s %v, want %s", d.Verdict, d.Reasons, c.want)
			}
			if c.want == contract.Deny && !slices.Equal(d.Reasons, []string{ReasonApprovalRequired}) {
				t.Fatalf("reasons %v, want only %s", d.Reasons, ReasonApprovalRequired)
			}
		})
	}
}
