package replay_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/replay"
)

// A candidate that forbids agents writing: the two allowed writes become
// denials, the write blocked by the kill switch gains a reason, the one
// the default already denied by policy (../escape) is decided the same
// (the same verdict and reason code, only the policy detail differs), and
// the export itself is untouched.
func TestCounterfactualListsWhatTheCandidateDecidesOtherwise(t *testing.T) {
	export := chainExport(t)
	before := bytes.Clone(export)
	src := string(policy.Default().Source()) + `
@id("agents-never-write")
@scope("action")
forbid (principal, action == Action::"fs.write", resource) when { context.role == "agent" };
`
	candidate, err := policy.Compile("candidate.cedar", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	cf := replay.NewCounterfactual("acme", candidate, action.Builtin())
	if err := cf.ReadJSONL(bytes.NewReader(export)); err != nil {
		t.Fatal(err)
	}
	rep := cf.Report()
	// acme: 4 decisions (allowed notes/a.txt and b.txt; blocked ../escape
	// by policy and killed.txt by the switch), 8 records.
	if rep.Records != 8 || rep.Decisions != 4 || rep.Unreadable != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Differ != 3 || len(rep.Differences) != 3 {
		t.Fatalf("differ %d: %+v", rep.Differ, rep.Differences)
	}
	var allowed, gained int
	for _, d := range rep.Differences {
		if d.Tenant != "acme" || d.Candidate.PolicyHash != candidate.Hash() || d.Recorded.PolicyHash != policy.Default().Hash() {
			t.Fatalf("difference %+v", d)
		}
		if !strings.Contains(d.Candidate.Policies, "agents-never-write") {
			t.Fatalf("candidate side does not name the forbidding policy: %+v", d)
		}
		if d.Recorded.Verdict == contract.Allow && d.Candidate.Verdict == contract.Deny {
			allowed++
		}
		if d.Target == "killed.txt" && len(d.Recorded.Reasons) == 1 && len(d.Candidate.Reasons) == 2 {
			gained++
		}
		if d.Target == "../escape" {
			t.Fatalf("a decision with the same verdict and reasons is listed: %+v", d)
		}
	}
	if allowed != 2 || gained != 1 {
		t.Fatalf("want the two allowed writes to become denials and the killed one to gain a reason: %+v", rep.Differences)
	}
	// The default bundle as candidate decides everything as recorded.
	same := replay.NewCounterfactual("", policy.Default(), action.Builtin())
	if err := same.ReadJSONL(bytes.NewReader(export)); err != nil {
		t.Fatal(err)
	}
	if r := same.Report(); r.Differ != 0 || r.Decisions != 8 {
		t.Fatalf("the recorded bundle as candidate: %+v", r)
	}
	// What is not an audit record, or a decision naming another tenant
	// than its record's, is counted unreadable, never skipped silently.
	lines := bytes.Split(bytes.TrimSpace(export), []byte("\n"))
	// The record's own tenant (its last "tenant" key, canonical JSON
	// sorts it after the payload), not its input's.
	i := bytes.LastIndex(lines[0], []byte(`"tenant":"acme"`))
	foreign := append(append(bytes.Clone(lines[0][:i]), `"tenant":"beta"`...), lines[0][i+len(`"tenant":"acme"`):]...)
	bad := replay.NewCounterfactual("", candidate, action.Builtin())
	bad.Add([]byte("not json"))
	bad.Add([]byte(`{"foo":1}`))
	bad.Add(foreign)
	if r := bad.Report(); r.Unreadable != 3 || r.Decisions != 1 || r.Compares != replay.Compared {
		t.Fatalf("bad input: %+v", r)
	}
	if !bytes.Equal(export, before) {
		t.Fatal("the export changed")
	}
}
