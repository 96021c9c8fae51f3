package contract

import (
	"errors"
	"fmt"
	"slices"
)

// Risk classes, from observe-only to irreversible.
const (
	A0 = "A0" // observe (read-only)
	A1 = "A1" // reversible write
	A2 = "A2" // hard-to-reverse write
	A3 = "A3" // irreversible
)

// Effect kinds: the world an action touches.
const (
	EffectFS   = "fs"
	EffectHTTP = "http"
)

// ActionSpec describes one action type.
type ActionSpec struct {
	Type       string
	Class      string
	Effect     string
	ReadOnly   bool
	TargetHelp string
}

// actions is the registry of known action types, in a fixed order.
var actions = []ActionSpec{
	{Type: "fs.read", Class: A0, Effect: EffectFS, ReadOnly: true, TargetHelp: "relative path inside the tenant sandbox"},
	{Type: "fs.write", Class: A1, Effect: EffectFS, TargetHelp: "relative path inside the tenant sandbox; params.content is written"},
	{Type: "http.get", Class: A0, Effect: EffectHTTP, ReadOnly: true, TargetHelp: "http(s) URL whose host is on the allowlist"},
	{Type: "http.post", Class: A2, Effect: EffectHTTP, TargetHelp: "http(s) URL whose host is on the allowlist; params.body is sent"},
	{Type: "fs.delete", Class: A3, Effect: EffectFS, TargetHelp: "relative path inside the tenant sandbox"},
}

// ErrUnknownAction is returned for an action type that is not registered.
var ErrUnknownAction = errors.New("unknown action type")

// LookupAction returns the spec of an action type.
func LookupAction(typ string) (ActionSpec, error) {
	for _, a := range actions {
		if a.Type == typ {
			return a, nil
		}
	}
	return ActionSpec{}, fmt.Errorf("action %q: %w", typ, ErrUnknownAction)
}

// Actions returns every registered action spec in registry order.
func Actions() []ActionSpec { return slices.Clone(actions) }

// ValidClass reports whether c is one of A0..A3.
func ValidClass(c string) bool { return c == A0 || c == A1 || c == A2 || c == A3 }

// ClassOf returns the class of a registered action type, or "".
func ClassOf(typ string) string {
	a, err := LookupAction(typ)
	if err != nil {
		return ""
	}
	return a.Class
}
