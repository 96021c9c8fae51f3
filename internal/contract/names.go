package contract

import (
	"errors"
	"fmt"
)

// SchemaVersionV2 is carried by a stored intent whose action name only v2
// allows (contracts/v2/action_intent.schema.json). Every other record,
// and every intent of a V1 name, carries SchemaVersion.
const SchemaVersionV2 = "v2"

// Action name lengths, in bytes (names are ASCII).
const (
	// MaxV1ActionName is the longest V1 name.
	MaxV1ActionName = 64
	// MinActionName and MaxActionName bound every name (v2).
	MinActionName = 3
	MaxActionName = 128
)

// The name rules. A V1 name is two lower-case words joined by a dot,
// at most 64 bytes (^[a-z]+\.[a-z]+$). A v2 name is two or more
// segments joined by dots, each a lower-case letter or digit then
// lower-case letters, digits, _ or -, 3..128 bytes in all
// (^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$). Every V1 name is a
// v2 name; a name's version is the first of V1 and v2 that accepts it,
// so it is a function of the name alone.

// ActionNameVersion returns the intent contract a name needs:
// SchemaVersion ("v1") for a V1 name, SchemaVersionV2 for a name only v2
// allows, "" for a name neither allows.
func ActionNameVersion(name string) string {
	v1, err := scanActionName(name)
	switch {
	case err != nil:
		return ""
	case v1:
		return SchemaVersion
	default:
		return SchemaVersionV2
	}
}

// IsV1ActionName reports whether the V1 contracts accept name.
func IsV1ActionName(name string) bool { return ActionNameVersion(name) == SchemaVersion }

// CheckActionName says what is wrong with name as an action name (nil if
// v2, and so possibly V1, accepts it).
func CheckActionName(name string) error {
	_, err := scanActionName(name)
	return err
}

// CheckIntentVersion says what is wrong with a stored intent's
// schema_version for its action: it must be exactly the version the name
// needs, so a v2 intent of a name V1 accepts and a v1 intent of a wider
// name are both refused.
func CheckIntentVersion(version, action string) error {
	need := ActionNameVersion(action)
	switch {
	case need == "":
		return fmt.Errorf("intent action %q: %w", action, CheckActionName(action))
	case version != need:
		return fmt.Errorf("intent schema_version %q for action %q, which is a %s name", version, action, need)
	}
	return nil
}

// scanActionName checks name against the v2 rule and reports whether V1
// accepts it too. A scanner rather than a regexp: one pass, and the error
// says which rule failed (fuzzed against both patterns).
func scanActionName(name string) (v1 bool, err error) {
	switch {
	case len(name) < MinActionName:
		return false, fmt.Errorf("an action name is at least %d bytes", MinActionName)
	case len(name) > MaxActionName:
		return false, fmt.Errorf("an action name is at most %d bytes", MaxActionName)
	}
	v1 = len(name) <= MaxV1ActionName
	segments, start := 0, true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if start {
				return false, errEmptySegment
			}
			segments++
			start = true
			continue
		case 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9':
			v1 = false
		case c == '_' || c == '-':
			if start {
				return false, fmt.Errorf("a segment of an action name starts with a lower-case letter or digit, not %q", c)
			}
			v1 = false
		default:
			return false, errNameByte
		}
		start = false
	}
	if start {
		return false, errEmptySegment
	}
	segments++
	if segments < 2 {
		return false, errors.New("an action name has at least two segments joined by a dot (service.verb)")
	}
	return v1 && segments == 2, nil
}

var (
	errEmptySegment = errors.New("an action name has no empty segment (no leading, trailing or double dot)")
	errNameByte     = errors.New("an action name holds only lower-case letters, digits, _, - and dots")
)
