package replay

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// Counterfactual replay: every recorded decision decided again, from its
// recorded input, under a candidate bundle instead of the bundle it was
// recorded under (gate.DecideUnder), and each one the candidate decides
// otherwise (gate.Differs) listed with the verdict, reasons and deciding
// policies under both. It answers "what would this policy change have
// done to what already happened" before the change is made. Like replay
// it only reads bytes and calls pure functions; it verifies no chain (a
// normal replay does) and changes nothing.

// Difference is one recorded decision the candidate decides otherwise.
type Difference struct {
	Tenant    string    `json:"tenant"`
	Seq       uint64    `json:"seq"`
	Kind      string    `json:"kind"`
	IntentID  string    `json:"intent_id"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Recorded  gate.Side `json:"recorded"`
	Candidate gate.Side `json:"candidate"`
}

// CounterfactualReport is what a counterfactual replay found.
type CounterfactualReport struct {
	Candidate  string `json:"candidate_policy_hash"`
	Records    uint64 `json:"records"`
	Decisions  uint64 `json:"decisions"`
	Differ     uint64 `json:"differ"`
	Unreadable uint64 `json:"unreadable"` // lines that are no audit record, and decision records whose payload could not be decoded or names another tenant
	// Compares says what was compared: the action decisions; the
	// candidate's operation policies (who may call the API) are not.
	Compares    string       `json:"compares"`
	Differences []Difference `json:"differences"`
}

// Compared is CounterfactualReport.Compares.
const Compared = "action decisions only: the candidate's operation policies (API authorization) are not compared"

// Counterfactual accumulates records and re-decides their decisions
// under one candidate bundle.
type Counterfactual struct {
	only      string
	candidate *policy.Bundle
	actions   *action.Registry
	rep       CounterfactualReport
}

// NewCounterfactual returns a counterfactual replay of tenant's records
// ("" = every tenant) under candidate, with the action types of actions.
func NewCounterfactual(tenant string, candidate *policy.Bundle, actions *action.Registry) *Counterfactual {
	return &Counterfactual{only: tenant, candidate: candidate, actions: actions,
		rep: CounterfactualReport{Candidate: candidate.Hash(), Compares: Compared, Differences: []Difference{}}}
}

// Add re-decides one record, given as stored (a checkpoint line or a
// record that carries no decision only counts).
func (c *Counterfactual) Add(raw []byte) {
	if contract.IsCheckpointLine(raw) {
		return
	}
	var rec contract.AuditRecord
	if json.Unmarshal(raw, &rec) != nil || rec.Tenant == "" {
		c.rep.Unreadable++ // not an audit record: said, never skipped silently
		return
	}
	if c.only != "" && rec.Tenant != c.only {
		return
	}
	c.rep.Records++
	if _, ok := decisionKinds[rec.Kind]; !ok {
		return
	}
	c.rep.Decisions++
	var p gate.DecisionPayload
	if err := json.Unmarshal(rec.Payload, &p); err != nil || p.Input.Tenant != rec.Tenant {
		c.rep.Unreadable++
		return
	}
	got := gate.DecideUnder(p.Input, c.candidate, c.actions)
	if !gate.Differs(p.Decision, got) {
		return
	}
	c.rep.Differ++
	c.rep.Differences = append(c.rep.Differences, Difference{
		Tenant: rec.Tenant, Seq: rec.Seq, Kind: rec.Kind, IntentID: p.Input.Intent.ID, Action: p.Input.Intent.Action, Target: p.Input.Intent.Target,
		Recorded:  gate.SideOf(p.Decision),
		Candidate: gate.SideOf(got),
	})
}

// ReadJSONL re-decides every line of an export.
func (c *Counterfactual) ReadJSONL(src io.Reader) error {
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	for sc.Scan() {
		if line := sc.Bytes(); len(bytes.TrimSpace(line)) > 0 {
			c.Add(line)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	return nil
}

// Report returns what was found, the differences in tenant and sequence
// order.
func (c *Counterfactual) Report() CounterfactualReport {
	rep := c.rep
	rep.Differences = slices.Clone(rep.Differences)
	slices.SortStableFunc(rep.Differences, func(a, b Difference) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Seq, b.Seq))
	})
	return rep
}
