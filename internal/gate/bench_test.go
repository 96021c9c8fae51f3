package gate_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// BenchmarkGovernedExecute: propose + execute of an A0 action on an
// in-process embedded store (durable audit of proposal, decision, start and
// finish; idempotency claim and result), with a no-op executor.
func BenchmarkGovernedExecute(b *testing.B) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(b, b.TempDir(), ex)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		v, _, err := n.gate.Propose(ctx, acme, agent, contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: fmt.Sprint("b", i)}, gate.Meta{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil {
			b.Fatal(err)
		}
	}
}
