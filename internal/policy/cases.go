package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Test cases of a bundle (exoarmur policy test): a file of requests, each
// with the decision and, optionally, the reasons expected. Like `opa test`
// or Cerbos' test suites, a case names what it checks, and the run names
// every case that fails and why.
//
//	{"cases": [
//	  {"name": "short titles are allowed",
//	   "action": {"principal": "key_1", "role": "agent", "action": "tickets.create", "target": "http://127.0.0.1:9000/tickets",
//	              "allowlist": ["127.0.0.1:9000"], "params": {"title": "Disk full"}, "time": "2026-12-02T10:00:00Z"},
//	   "expect": {"decision": "allow"}},
//	  {"name": "auditors never approve",
//	   "operation": {"principal": "key_2", "role": "auditor", "operation": "approve", "tenant": "acme", "granted": ["acme"]},
//	   "expect": {"decision": "deny"}}
//	]}
//
// An action case is decided by Evaluate with the class and effect of its
// action type, an operation case by Authorize. The time of an action case
// (RFC 3339) is what context.time is built from; it is required when the
// action's effect has params, so a case never depends on the day it runs.

// CaseFile is a file of test cases.
type CaseFile struct {
	Cases []Case `json:"cases"`
}

// Case is one test case: exactly one of Action and Operation.
type Case struct {
	Name      string         `json:"name"`
	Action    *ActionCase    `json:"action,omitempty"`
	Operation *OperationCase `json:"operation,omitempty"`
	Expect    Expect         `json:"expect"`
}

// ActionCase is an action request.
type ActionCase struct {
	Principal string            `json:"principal"`
	Role      string            `json:"role"`
	Action    string            `json:"action"`
	Target    string            `json:"target"`
	Allowlist []string          `json:"allowlist,omitempty"`
	Params    map[string]string `json:"params,omitempty"`
	Time      *time.Time        `json:"time,omitempty"`
}

// OperationCase is an API operation request.
type OperationCase struct {
	Principal string   `json:"principal"`
	Role      string   `json:"role"`
	Operation string   `json:"operation"`
	Tenant    string   `json:"tenant,omitempty"`
	Granted   []string `json:"granted,omitempty"`
}

// Expect is a case's expected outcome: "allow" or "deny", and when
// Reasons is not nil, exactly those policy ids (in any order).
type Expect struct {
	Decision string   `json:"decision"`
	Reasons  []string `json:"reasons,omitempty"`
}

// ParseCases decodes a case file strictly: an unknown field, a case with
// no name, both or neither request, or a decision other than allow/deny
// is an error naming the case.
func ParseCases(name string, data []byte) (CaseFile, error) {
	var f CaseFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return CaseFile{}, fmt.Errorf("%s: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return CaseFile{}, fmt.Errorf("%s: data after the case file's object", name)
	}
	if len(f.Cases) == 0 {
		return CaseFile{}, fmt.Errorf("%s: no cases", name)
	}
	seen := map[string]bool{}
	for i, c := range f.Cases {
		bad := func(msg string) error { return fmt.Errorf("%s: case %d (%q): %s", name, i+1, c.Name, msg) }
		switch {
		case c.Name == "":
			return CaseFile{}, bad("a name is required")
		case seen[c.Name]:
			return CaseFile{}, bad("a second case of that name")
		case (c.Action == nil) == (c.Operation == nil):
			return CaseFile{}, bad(`exactly one of "action" and "operation" is required`)
		case c.Expect.Decision != "allow" && c.Expect.Decision != "deny":
			return CaseFile{}, bad(`expect.decision must be "allow" or "deny"`)
		}
		seen[c.Name] = true
	}
	return f, nil
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Name    string
	Passed  bool
	Got     Result
	Failure string // why it failed: what was expected and what came
}

// RunCases decides every case against b; types are the action types (an
// action case of a type not among them fails).
func RunCases(b *Bundle, types []ActionType, cases []Case) []CaseResult {
	byName := make(map[string]ActionType, len(types))
	for _, t := range types {
		byName[t.Name] = t
	}
	out := make([]CaseResult, 0, len(cases))
	for _, c := range cases {
		r := CaseResult{Name: c.Name}
		if c.Action != nil {
			a := c.Action
			typ, ok := byName[a.Action]
			switch {
			case !ok:
				r.Failure = fmt.Sprintf("unknown action type %q", a.Action)
			case typ.Effect.params && a.Time == nil:
				r.Failure = fmt.Sprintf("action %s is decided on the time: the case needs a \"time\"", a.Action)
			default:
				req := Request{PrincipalID: a.Principal, Role: a.Role, Action: a.Action, Class: typ.Class, Effect: typ.Effect,
					Target: a.Target, Allowlist: a.Allowlist, Params: a.Params}
				if a.Time != nil {
					req.Time = *a.Time
				}
				var err error
				if typ.Target != nil {
					req.Target, err = typ.Target(a.Target, a.Params)
				}
				if err != nil {
					// As the gate: a request that does not render is denied.
					r.Got = Result{Errors: []string{"render: " + err.Error()}}
				} else {
					r.Got = Evaluate(b, req)
				}
			}
		} else {
			o := c.Operation
			r.Got = Authorize(b, OpRequest{PrincipalID: o.Principal, Role: o.Role, Granted: o.Granted, Operation: o.Operation, Tenant: o.Tenant})
		}
		if r.Failure == "" {
			r.Failure = mismatch(c.Expect, r.Got)
		}
		r.Passed = r.Failure == ""
		out = append(out, r)
	}
	return out
}

func decisionOf(r Result) string {
	if r.Allowed {
		return "allow"
	}
	return "deny"
}

func mismatch(want Expect, got Result) string {
	reasons := slices.Sorted(slices.Values(want.Reasons))
	switch {
	case decisionOf(got) != want.Decision:
	case want.Reasons != nil && !slices.Equal(reasons, got.Reasons):
	default:
		return ""
	}
	msg := fmt.Sprintf("got %s %s, want %s", decisionOf(got), reasonList(got.Reasons), want.Decision)
	if want.Reasons != nil {
		msg += " " + reasonList(reasons)
	}
	if len(got.Errors) > 0 {
		msg += "; evaluation errors: " + strings.Join(got.Errors, "; ")
	}
	return msg
}

func reasonList(r []string) string { return "[" + strings.Join(r, ", ") + "]" }
