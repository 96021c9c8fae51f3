package replay

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// kindCheckpoint is the Kind of a mismatch found by the checkpoint checks.
const kindCheckpoint = "checkpoint"

// Anchor makes the replay check the chains against signed checkpoints
// (audit.Trust): every checkpoint line must verify under trust and cover
// the record just before it in its tenant's chain (same sequence, same
// hash). With endCovered (an export), every chain must also end at a
// record a checkpoint line covers: an export cut short, or one whose
// last records were altered and re-hashed, no longer ends where its
// signed checkpoint says. With claimed (an export of one tenant, New's
// tenant), a record of any other tenant is a mismatch instead of being
// skipped.
func (r *Replayer) Anchor(trust audit.Trust, endCovered, claimed bool) {
	r.trust, r.endCovered = trust, endCovered
	r.claimed = claimed && r.only != ""
}

// Require adds checkpoints the chains must contain: for each, the chain
// of its tenant must hold a record at its sequence with its hash. They
// come from outside the records (a witness's copy, `--checkpoint FILE`,
// the last checkpoint a node saw, the store's). One that does not verify
// under the trust given to Anchor is itself a mismatch (the store's were
// written by someone without the key); with no trust, none is accepted.
// Call it before the records are added.
func (r *Replayer) Require(cps ...contract.Checkpoint) {
	if r.required == nil {
		r.required = map[string][]contract.Checkpoint{}
	}
	for _, cp := range cps {
		if r.only != "" && cp.Tenant != r.only {
			continue
		}
		if err := r.verify(cp); err != nil {
			r.bad = append(r.bad, contract.ReplayMismatch{Tenant: cp.Tenant, Seq: cp.Seq, Kind: kindCheckpoint, Reason: "checkpoint: " + err.Error()})
			continue
		}
		r.required[cp.Tenant] = append(r.required[cp.Tenant], cp)
	}
	for t, list := range r.required {
		slices.SortStableFunc(list, func(a, b contract.Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
		r.required[t] = list
	}
}

// Checkpoints returns how many checkpoint lines were read without a trust
// to verify them (Anchor was not called).
func (r *Replayer) Checkpoints() (unverified uint64) { return r.unverified }

func (r *Replayer) verify(cp contract.Checkpoint) error {
	if r.trust == nil {
		return errors.New("no trusted key to verify it with")
	}
	return r.trust.Verify(cp)
}

// applyCheckpoint accounts one checkpoint line of an export.
func (r *Replayer) applyCheckpoint(p prepared) {
	if r.only != "" && p.head.Tenant != r.only && !r.claimed {
		return
	}
	if r.trust == nil {
		r.unverified++
		return
	}
	fail := func(seq uint64, format string, args ...any) {
		r.bad = append(r.bad, contract.ReplayMismatch{Tenant: p.head.Tenant, Seq: seq, Kind: kindCheckpoint, Reason: "checkpoint: " + fmt.Sprintf(format, args...)})
	}
	if p.cpErr != nil {
		fail(p.head.Seq, "line %d: %v", r.lines, p.cpErr)
		return
	}
	cp := p.cp
	if c, ok := r.tenants[cp.Tenant]; ok {
		c.cpFailed = true // until it is found to cover the record before it
	}
	if r.only != "" && cp.Tenant != r.only {
		fail(cp.Seq, "line %d is a checkpoint of tenant %q in an export claimed for %q (mixed tenants)", r.lines, clip(cp.Tenant), r.only)
		return
	}
	if err := r.trust.Verify(cp); err != nil {
		fail(cp.Seq, "line %d: %v", r.lines, err)
		return
	}
	c, ok := r.tenants[cp.Tenant]
	if !ok {
		fail(cp.Seq, "line %d covers record %d of %s, but the export holds no record of %s before it (records dropped or the checkpoint moved)", r.lines, cp.Seq, cp.Tenant, cp.Tenant)
		return
	}
	seq, hash := c.v.Head()
	switch {
	case seq < cp.Seq:
		fail(cp.Seq, "line %d covers record %d, but the chain before it ends at record %d (records dropped: truncated)", r.lines, cp.Seq, seq)
	case seq > cp.Seq:
		fail(cp.Seq, "line %d covers record %d, but it follows record %d (a checkpoint moved or records added after it)", r.lines, cp.Seq, seq)
	case hash != cp.RecordHash:
		fail(cp.Seq, "line %d says record %d has hash %s, the chain's record %d has %s (rewritten or re-hashed)", r.lines, cp.Seq, short(cp.RecordHash), seq, short(hash))
	default:
		c.covered, c.signed, c.cpFailed = seq, true, false
	}
}

// meetRequired checks record seq (stored hash) of t's chain against the
// required checkpoints it reaches.
func (r *Replayer) meetRequired(t string, c *chain, seq uint64, hash string) {
	list := r.required[t]
	for c.req < len(list) && list[c.req].Seq <= seq {
		cp := list[c.req]
		c.req++
		if cp.Seq < seq {
			r.bad = append(r.bad, contract.ReplayMismatch{Tenant: t, Seq: cp.Seq, Kind: kindCheckpoint,
				Reason: fmt.Sprintf("checkpoint: the chain has no record %d that the checkpoint signed at %s by key %s covers (records dropped)", cp.Seq, cp.Time.Format("2006-01-02T15:04:05Z"), cp.KeyID)})
			continue
		}
		if cp.RecordHash != hash {
			r.bad = append(r.bad, contract.ReplayMismatch{Tenant: t, Seq: cp.Seq, Kind: kindCheckpoint,
				Reason: fmt.Sprintf("checkpoint: record %d has hash %s, the checkpoint signed at %s by key %s says %s (the chain was rewritten or recreated)", cp.Seq, short(hash), cp.Time.Format("2006-01-02T15:04:05Z"), cp.KeyID, short(cp.RecordHash))})
		}
	}
}

// endMismatches are the checks made once every record is in: required
// checkpoints beyond a chain's end, and (endCovered) chains whose last
// records no checkpoint covers.
func (r *Replayer) endMismatches() []contract.ReplayMismatch {
	var out []contract.ReplayMismatch
	for t, list := range r.required {
		c := r.tenants[t]
		var seq uint64
		next := 0
		if c != nil {
			seq, _ = c.v.Head()
			next = c.req
		}
		for _, cp := range list[next:] {
			out = append(out, contract.ReplayMismatch{Tenant: t, Seq: cp.Seq, Kind: kindCheckpoint,
				Reason: fmt.Sprintf("checkpoint: the chain ends at record %d, before record %d that the checkpoint signed at %s by key %s covers (truncated, or the stream was recreated)", seq, cp.Seq, cp.Time.Format("2006-01-02T15:04:05Z"), cp.KeyID)})
		}
	}
	if !r.endCovered || r.trust == nil {
		return out
	}
	signedTenants := []string{}
	for t, c := range r.tenants {
		if c.signed {
			signedTenants = append(signedTenants, t)
		}
	}
	slices.Sort(signedTenants)
	for t, c := range r.tenants {
		seq, _ := c.v.Head()
		switch {
		case !c.signed && len(signedTenants) > 0:
			out = append(out, contract.ReplayMismatch{Tenant: t, Seq: 0, Kind: kindCheckpoint,
				Reason: fmt.Sprintf("checkpoint: the export holds %d records of %s and no checkpoint of %s; its checkpoints are for %v (mixed tenants)", c.records, t, t, signedTenants)})
		case c.covered != seq && !c.cpFailed:
			out = append(out, contract.ReplayMismatch{Tenant: t, Seq: c.covered + 1, Kind: kindCheckpoint,
				Reason: fmt.Sprintf("checkpoint: records %d to %d are covered by no signed checkpoint (the export's end was cut or altered; an export ends with the checkpoint of its last record)", c.covered+1, seq)})
		}
	}
	return out
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
