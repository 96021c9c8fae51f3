package gate

import (
	"context"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Permit is the only thing an executor accepts. Its fields are unexported, so
// only this package can mint one, and it does so only after an ALLOW decision
// has been recorded and the idempotency key claimed. The zero Permit is
// invalid and every executor refuses it.
type Permit struct {
	tenant   tenant.ID
	intent   contract.ActionIntent
	decision string // hash of the recorded ALLOW decision
}

// Valid reports whether p was minted by the gate.
func (p *Permit) Valid() bool {
	return p != nil && !p.tenant.IsZero() && p.decision != "" && p.intent.ID != ""
}

// Tenant returns the tenant the permit is for.
func (p *Permit) Tenant() tenant.ID { return p.tenant }

// Intent returns a copy of the permitted intent.
func (p *Permit) Intent() contract.ActionIntent {
	in := p.intent
	if in.Params != nil {
		params := make(map[string]string, len(in.Params))
		for k, v := range in.Params {
			params[k] = v
		}
		in.Params = params
	}
	return in
}

// DecisionHash returns the hash of the ALLOW decision that minted p.
func (p *Permit) DecisionHash() string { return p.decision }

// Executor performs the side effect of one action type. Implementations live
// in internal/executor; they must refuse a permit that is not Valid.
type Executor interface {
	Run(ctx context.Context, p *Permit) (output map[string]string, err error)
}

// Executors finds the executor for an action type.
type Executors interface {
	Lookup(action string) (Executor, bool)
}
