package action

import "github.com/exoarmur/exoarmur/internal/policy"

// PolicyTypes returns the action types as the policies see them, in
// registry order: what policy.Schema, policy.NewValidator and policy
// tests are given (internal/policy cannot import this package).
func (r *Registry) PolicyTypes() []policy.ActionType {
	out := make([]policy.ActionType, 0, len(r.List()))
	for _, reg := range r.List() {
		out = append(out, reg.PolicyType())
	}
	return out
}
