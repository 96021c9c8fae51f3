package gate

import (
	"slices"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// DecideUnder decides in as if it had been recorded under candidate: the
// same pure Decide on the same input, with the candidate's hash as the
// input's policy hash. Shadow evaluation (a candidate beside the active
// bundle) and counterfactual replay (a candidate over recorded
// decisions) both decide with it, so they agree with what the gate would
// decide once the candidate is active.
func DecideUnder(in Input, candidate *policy.Bundle, actions *action.Registry) contract.Decision {
	if candidate != nil {
		in.PolicyHash = candidate.Hash()
	}
	return Decide(in, candidate, actions)
}

// Differs reports whether two decisions of one input decide differently:
// another verdict or other reasons. What the permitting policies were
// (the policy check's detail) is not a difference of outcome.
func Differs(a, b contract.Decision) bool {
	return a.Verdict != b.Verdict || !slices.Equal(a.Reasons, b.Reasons)
}

// PolicyDetail is the detail of a decision's policy check: the ids of
// the policies that decided it ("" when the check did not run).
func PolicyDetail(d contract.Decision) string {
	for _, c := range d.Checks {
		if c.Name == CheckPolicy {
			return c.Detail
		}
	}
	return ""
}
