// Package gate is ExoArmur's one gate. Decide is the pure decision function;
// Gate gathers a decision's Input from the stores (failing closed on any
// error), records the decision in the audit chain, claims the idempotency
// key, and only then mints the Permit that executors require. Every path that
// can cause a side effect goes through Gate.Execute.
package gate
