package approval

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Rules are the declared approval rules: for each risk class, how many
// distinct approvers an intent needs and which roles may approve it, as a
// default and per tenant. They are configuration (rules.json holds the
// built-in ones; `serve --approval-rules FILE` declares others), not
// constants in Go; they may raise what the built-in rules ask (a tenant may
// require approval of A0 reads, three approvers for A3, or only operators)
// but never lower it: side effects need an approval and A3 two (DESIGN.md,
// promises 3 and 5), whatever a file says.
//
// A record freezes the number its intent needs when it is requested
// (Record.Required), and the gate records that number in each decision's
// input (Reading.Required), so a decision replays the same under any later
// rules.
type Rules struct {
	def     scope
	tenants map[tenant.ID]scope
}

// scope is the rules of the default or of one tenant.
type scope struct {
	classes classRules
	// consent: keys able to approve (operator, admin) created over the API
	// wait for a second admin's consent before they authenticate.
	consent bool
}

// ClassRule is what one class needs in one scope.
type ClassRule struct {
	// Approvals is how many distinct owners (other than the proposer's)
	// must approve.
	Approvals int `json:"approvals"`
	// Roles may approve (operator, admin).
	Roles []string `json:"roles"`
}

type classRules map[string]ClassRule

// rulesFile is the declared form.
type rulesFile struct {
	Default *defaultFile           `json:"default"`
	Tenants map[string]*tenantFile `json:"tenants"`
}

// defaultFile names every class.
type defaultFile struct {
	A0 *ClassRule `json:"A0"`
	A1 *ClassRule `json:"A1"`
	A2 *ClassRule `json:"A2"`
	A3 *ClassRule `json:"A3"`
	// ApproverKeyConsent makes keys able to approve wait for a second
	// admin's consent (access.Service.ConsentKey) in every tenant.
	ApproverKeyConsent bool `json:"approver_key_consent"`
}

// tenantFile names the classes a tenant changes.
type tenantFile struct {
	A0 *ruleEdit `json:"A0"`
	A1 *ruleEdit `json:"A1"`
	A2 *ruleEdit `json:"A2"`
	A3 *ruleEdit `json:"A3"`
	// ApproverKeyConsent: as in the default; a tenant can ask for it, not
	// waive it when the default asks.
	ApproverKeyConsent bool `json:"approver_key_consent"`
}

func (d *defaultFile) byClass() []*ClassRule { return []*ClassRule{d.A0, d.A1, d.A2, d.A3} }
func (t *tenantFile) byClass() []*ruleEdit   { return []*ruleEdit{t.A0, t.A1, t.A2, t.A3} }

// ruleEdit is a tenant's change to a class: unset fields keep the default.
type ruleEdit struct {
	Approvals *int     `json:"approvals"`
	Roles     []string `json:"roles"`
}

//go:embed rules.json
var builtinRules []byte

var classes = []string{contract.A0, contract.A1, contract.A2, contract.A3}

// floor is the least any rules may ask: what the built-in rules ask, and
// what every decision recorded before rules were declared was decided
// under.
var floor = map[string]int{contract.A0: 0, contract.A1: 1, contract.A2: 1, contract.A3: 2}

// approverRoles are the roles that can approve at all.
var approverRoles = []string{auth.RoleOperator, auth.RoleAdmin}

// ErrRules marks declared rules that cannot be used.
var ErrRules = errors.New("approval rules")

// BuiltinRules returns the built-in rules (rules.json). Rules are never
// changed once parsed, so every caller shares one value.
func BuiltinRules() *Rules {
	r, err := parsedBuiltin()
	if err != nil {
		panic("approval: built-in rules: " + err.Error()) // a build defect, caught by TestBuiltinRules
	}
	return r
}

var parsedBuiltin = sync.OnceValues(func() (*Rules, error) { return ParseRules(builtinRules) })

// ParseRules reads declared rules (JSON; unknown fields, and so unknown
// classes, are refused). The default must name every class A0..A3; a
// tenant names only the classes it changes. Rules below the floor, unknown classes or roles, and invalid
// tenants are errors naming what is wrong.
func ParseRules(data []byte) (*Rules, error) {
	if err := noDuplicateKeys(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRules, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f rulesFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRules, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the rules object", ErrRules)
	}
	if f.Default == nil {
		return nil, fmt.Errorf("%w: default: missing (the default names every class)", ErrRules)
	}
	r := &Rules{def: scope{classes: classRules{}, consent: f.Default.ApproverKeyConsent}, tenants: map[tenant.ID]scope{}}
	for i, cr := range f.Default.byClass() {
		c := classes[i]
		if cr == nil {
			return nil, fmt.Errorf("%w: default: class %s is missing (the default names every class)", ErrRules, c)
		}
		if err := cr.check(c); err != nil {
			return nil, fmt.Errorf("%w: default: %w", ErrRules, err)
		}
		r.def.classes[c] = ClassRule{Approvals: cr.Approvals, Roles: slices.Clone(cr.Roles)}
	}
	for name, tf := range f.Tenants {
		t, err := tenant.Parse(name)
		if err != nil {
			return nil, fmt.Errorf("%w: tenants: %w", ErrRules, err)
		}
		if tf == nil {
			return nil, fmt.Errorf("%w: tenant %s: null (omit the tenant to keep the default)", ErrRules, name)
		}
		sc := scope{classes: classRules{}, consent: r.def.consent || tf.ApproverKeyConsent}
		for i, e := range tf.byClass() {
			if e == nil {
				continue
			}
			c := classes[i]
			rule := r.def.classes[c]
			if e.Approvals != nil {
				rule.Approvals = *e.Approvals
			}
			if e.Roles != nil {
				rule.Roles = slices.Clone(e.Roles)
			}
			if err := rule.check(c); err != nil {
				return nil, fmt.Errorf("%w: tenant %s: %w", ErrRules, name, err)
			}
			sc.classes[c] = rule
		}
		r.tenants[t] = sc
	}
	return r, nil
}

func (cr ClassRule) check(class string) error {
	if cr.Approvals < floor[class] {
		return fmt.Errorf("class %s: %d approvals is below the least allowed (%d)", class, cr.Approvals, floor[class])
	}
	if cr.Approvals > 5 {
		return fmt.Errorf("class %s: %d approvals is more than 5", class, cr.Approvals)
	}
	if cr.Approvals > 0 && len(cr.Roles) == 0 {
		return fmt.Errorf("class %s: needs %d approvals but no role may approve", class, cr.Approvals)
	}
	for _, role := range cr.Roles {
		if !slices.Contains(approverRoles, role) {
			return fmt.Errorf("class %s: role %q may not approve (want %s)", class, role, strings.Join(approverRoles, " or "))
		}
	}
	return nil
}

// Rule returns what class needs in tenant t. An unknown class gets A3's
// rule (fail closed).
func (r *Rules) Rule(t tenant.ID, class string) ClassRule {
	if !contract.ValidClass(class) {
		class = contract.A3
	}
	if cr, ok := r.tenants[t].classes[class]; ok {
		return cr
	}
	return r.def.classes[class]
}

// ApproverKeysNeedConsent reports whether, in tenant t, a key able to
// approve (role operator or admin) created over the API waits for a
// second admin's consent before it authenticates.
func (r *Rules) ApproverKeysNeedConsent(t tenant.ID) bool {
	if sc, ok := r.tenants[t]; ok {
		return sc.consent
	}
	return r.def.consent
}

// AnyApproverKeysNeedConsent reports whether the default or any tenant
// asks for consent to approver keys (a system admin key, which manages
// every tenant's keys, is then held back too).
func (r *Rules) AnyApproverKeysNeedConsent() bool {
	if r.def.consent {
		return true
	}
	for _, sc := range r.tenants {
		if sc.consent {
			return true
		}
	}
	return false
}

// CanApprove reports whether role is one that approval rules can let
// approve (operator, admin): the keys a consent rule holds back.
func CanApprove(role string) bool { return slices.Contains(approverRoles, role) }

// Required returns how many distinct approvals class needs in tenant t.
func (r *Rules) Required(t tenant.ID, class string) int { return r.Rule(t, class).Approvals }

// Floor returns the least number of approvals class can need under any
// rules, which is what a recorded decision without a recorded number was
// decided under. An unknown class gets A3's.
func Floor(class string) int {
	if n, ok := floor[class]; ok {
		return n
	}
	return floor[contract.A3]
}

// Eligible reports why p may not vote on intent in of tenant t (nil if it
// may): a principal of the tenant in a role the rules let approve the
// intent's class, whose grants cover the action, not the proposer.
func (r *Rules) Eligible(t tenant.ID, in contract.ActionIntent, p *auth.Principal) error {
	rule := r.Rule(t, in.Class)
	switch {
	case p == nil || !slices.Contains(rule.Roles, p.Role) || !p.HasTenant(t.String()):
		if p != nil && p.HasTenant(t.String()) && slices.Contains(approverRoles, p.Role) {
			return fmt.Errorf("%w (class %s in %s is approved by %s)", ErrNotOperator, in.Class, t, strings.Join(rule.Roles, ", "))
		}
		return ErrNotOperator
	case !p.MayUse(in.Action, in.Class):
		return fmt.Errorf("%w (%s, class %s; grants %v)", ErrNotEntitled, in.Action, in.Class, p.Actions)
	case p.ID == in.Proposer:
		return ErrSelfApproval
	}
	return nil
}

// noDuplicateKeys refuses an object that names a key twice, in any case:
// encoding/json matches field names case-insensitively and lets the last
// win, so "A3" then "a3" would silently replace a rule.
func noDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object bool
		seen   map[string]bool
		key    bool // the next token of an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].key = true
				}
				continue
			}
			k := strings.ToLower(tok.(string))
			if top.seen[k] {
				return fmt.Errorf("key %q appears twice in one object (keys are matched in any case)", tok)
			}
			top.seen[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, seen: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: an enclosing object expects a key next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}
