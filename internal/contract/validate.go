package contract

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/exoarmur/exoarmur/contracts"
)

// Untrusted JSON is checked in two layers: a strict structural scan (valid
// UTF-8, no duplicate keys, no NUL in strings, bounded depth, one value), then
// the V1 JSON Schema, validated by santhosh-tekuri/jsonschema: a maintained,
// spec-complete draft 2020-12 implementation with no transitive
// dependencies, so we write no validator of our own.

// MaxDepth bounds the nesting of untrusted JSON.
const MaxDepth = 32

var englishPrinter = message.NewPrinter(language.English)

var (
	schemasOnce sync.Once
	schemas     map[string]*jsonschema.Schema
	schemasErr  error
)

// versions are the contract versions compiled: each one's schema names,
// bytes and $id prefix.
var versions = []struct {
	version string
	names   func() []string
	schema  func(string) ([]byte, error)
	base    string
}{
	{SchemaVersion, contracts.V1Names, contracts.V1Schema, contracts.BaseURL},
	{SchemaVersionV2, contracts.V2Names, contracts.V2Schema, contracts.BaseURLV2},
}

// compiled returns every schema of every version, keyed by "v1/name".
func compiled() (map[string]*jsonschema.Schema, error) {
	schemasOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		for _, v := range versions {
			for _, name := range v.names() {
				raw, err := v.schema(name)
				if err != nil {
					schemasErr = err
					return
				}
				doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
				if err != nil {
					schemasErr = fmt.Errorf("schema %s/%s: %w", v.version, name, err)
					return
				}
				if err := c.AddResource(v.base+name+".schema.json", doc); err != nil {
					schemasErr = fmt.Errorf("schema %s/%s: %w", v.version, name, err)
					return
				}
			}
		}
		schemas = map[string]*jsonschema.Schema{}
		for _, v := range versions {
			for _, name := range v.names() {
				s, err := c.Compile(v.base + name + ".schema.json")
				if err != nil {
					schemasErr = fmt.Errorf("compile schema %s/%s: %w", v.version, name, err)
					return
				}
				schemas[v.version+"/"+name] = s
			}
		}
	})
	return schemas, schemasErr
}

// Validate checks raw JSON against the named V1 schema (e.g.
// "intent_request"). Failures are *Error with CodeInvalid and a message that
// names the field.
func Validate(schema string, raw []byte) error { return ValidateVersion(SchemaVersion, schema, raw) }

// ValidateVersion checks raw JSON against the named schema of a contract
// version (SchemaVersion or SchemaVersionV2), like Validate.
func ValidateVersion(version, schema string, raw []byte) error {
	_, err := validateDoc(raw, func(any) string { return version }, schema)
	return err
}

// validateDoc checks raw strictly, then against the schema of the
// version that pick chooses from the parsed document, and returns that
// version.
func validateDoc(raw []byte, pick func(doc any) string, schema string) (string, error) {
	all, err := compiled()
	if err != nil {
		return "", fmt.Errorf("contract schemas: %w", err)
	}
	if err := checkStrictJSON(raw, MaxDepth); err != nil {
		return "", err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return "", Errorf(CodeInvalid, "body is not valid JSON")
	}
	version := pick(doc)
	s, ok := all[version+"/"+schema]
	if !ok {
		return "", fmt.Errorf("contract: no schema %s/%s", version, schema)
	}
	if err := s.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return "", Errorf(CodeInvalid, "%s", describe(ve))
		}
		return "", Wrap(CodeInvalid, "body does not match the schema", err)
	}
	return version, nil
}

// requestVersion picks the contract of a body naming actions: V1 when
// every name it holds is one V1 accepts (or it holds none, or not as a
// string: V1 refuses it as before), else v2, which refuses a name
// neither accepts saying what v2 allows. So a V1 body is checked
// exactly as before v2 existed.
func requestVersion(names ...any) string {
	for _, n := range names {
		if s, ok := n.(string); ok && !IsV1ActionName(s) && s != "*" && !ValidClass(s) {
			return SchemaVersionV2
		}
	}
	return SchemaVersion
}

// ValidateKeyCreate checks the body of POST /v1/keys: against
// key_create v1, or v2 when it grants an action by a name only v2 allows.
func ValidateKeyCreate(raw []byte) error {
	_, err := validateDoc(raw, func(doc any) string {
		obj, _ := doc.(map[string]any)
		actions, _ := obj["actions"].([]any)
		return requestVersion(actions...)
	}, "key_create")
	return err
}

// DescribeValidation is the message of a JSON Schema failure of a
// document found under prefix (a JSON pointer, "" for the root): the most
// specific failure, naming its field as describe does. Declared actions'
// params schemas (internal/action) report through it.
func DescribeValidation(ve *jsonschema.ValidationError, prefix string) string {
	msg := describe(ve)
	if prefix == "" {
		return msg
	}
	// describe's message is `field "/x": ...`: put the prefix in front of the pointer.
	if rest, ok := strings.CutPrefix(msg, `field "/`); ok {
		if strings.HasPrefix(rest, `"`) { // the root itself
			return `field "` + prefix + rest
		}
		return `field "` + prefix + "/" + rest
	}
	return msg
}

// describe names the most specific failure: among all leaf causes, the one
// with the deepest instance location (ties broken by location, then
// message), so the message is stable and names the field.
func describe(ve *jsonschema.ValidationError) string {
	type leaf struct{ loc, msg string }
	var leaves []leaf
	var walk func(e *jsonschema.ValidationError, parent []string)
	walk = func(e *jsonschema.ValidationError, parent []string) {
		loc := e.InstanceLocation
		if pn, ok := e.ErrorKind.(*kind.PropertyNames); ok {
			// jsonschema v6.0.3 aliases the instance location of
			// propertyNames errors (it may name a sibling field), so the
			// object is taken from the schema location instead.
			loc = append(schemaObjectPath(e.SchemaURL), pn.Property)
		} else if len(loc) < len(parent) { // the name's own check reports no location
			loc = parent
		}
		if len(e.Causes) == 0 {
			leaves = append(leaves, leaf{"/" + strings.Join(loc, "/"), e.ErrorKind.LocalizedString(englishPrinter)})
			return
		}
		for _, c := range e.Causes {
			walk(c, loc)
		}
	}
	walk(ve, nil)
	slices.SortFunc(leaves, func(a, b leaf) int {
		if d := strings.Count(b.loc, "/") - strings.Count(a.loc, "/"); d != 0 {
			return d
		}
		return cmp.Or(strings.Compare(a.loc, b.loc), strings.Compare(a.msg, b.msg))
	})
	best := leaves[0]
	return fmt.Sprintf("field %q: %s", best.loc, best.msg)
}

// schemaObjectPath turns ".../x.schema.json#/properties/a/properties/b/propertyNames"
// into ["a", "b"].
func schemaObjectPath(schemaURL string) []string {
	_, frag, _ := strings.Cut(schemaURL, "#")
	var path []string
	parts := strings.Split(strings.Trim(frag, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "properties" {
			path = append(path, parts[i+1])
			i++
		}
	}
	return path
}

// DecodeIntentRequest strictly decodes the untrusted body of a proposal:
// checked against intent_request v1, or v2 when its action is not a V1
// name (ActionNameVersion of the action is the stored intent's version).
func DecodeIntentRequest(raw []byte) (IntentRequest, error) {
	if _, err := validateDoc(raw, func(doc any) string {
		obj, _ := doc.(map[string]any)
		return requestVersion(obj["action"])
	}, "intent_request"); err != nil {
		return IntentRequest{}, err
	}
	var req IntentRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return IntentRequest{}, Wrap(CodeInvalid, "body does not match the intent request shape", err)
	}
	return req, nil
}

// checkStrictJSON rejects what encoding/json would silently accept: invalid
// UTF-8, duplicate object keys (which parsers resolve differently), NUL
// characters in strings, nesting deeper than maxDepth, and trailing data.
func checkStrictJSON(raw []byte, maxDepth int) error {
	if !utf8.Valid(raw) {
		return Errorf(CodeInvalid, "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := strictValue(dec, "", 0, maxDepth); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(CodeInvalid, "body has data after the JSON value")
	}
	return nil
}

func fieldName(path string) string {
	if path == "" {
		return "/"
	}
	return path
}

func strictValue(dec *json.Decoder, path string, depth, maxDepth int) error {
	tok, err := dec.Token()
	if err == io.EOF && path == "" {
		return Errorf(CodeInvalid, "body is empty")
	}
	if err != nil {
		return Errorf(CodeInvalid, "field %q: not valid JSON: %v", fieldName(path), err)
	}
	switch v := tok.(type) {
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return Errorf(CodeInvalid, "field %q: NUL character in string", fieldName(path))
		}
	case json.Delim:
		if depth >= maxDepth {
			return Errorf(CodeInvalid, "field %q: nesting deeper than %d", fieldName(path), maxDepth)
		}
		if v == '{' {
			seen := map[string]struct{}{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return Errorf(CodeInvalid, "field %q: not valid JSON: %v", fieldName(path), err)
				}
				key, _ := kt.(string) // object keys are always strings
				if strings.IndexByte(key, 0) >= 0 {
					return Errorf(CodeInvalid, "field %q: NUL character in key", fieldName(path))
				}
				if _, dup := seen[key]; dup {
					return Errorf(CodeInvalid, "field %q: duplicate key", path+"/"+key)
				}
				seen[key] = struct{}{}
				if err := strictValue(dec, path+"/"+key, depth+1, maxDepth); err != nil {
					return err
				}
			}
		} else {
			for i := 0; dec.More(); i++ {
				if err := strictValue(dec, path+"/"+strconv.Itoa(i), depth+1, maxDepth); err != nil {
					return err
				}
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return Errorf(CodeInvalid, "field %q: not valid JSON: %v", fieldName(path), err)
		}
	}
	return nil
}

// DecodeKillSwitchRequest strictly decodes the body of a kill switch PUT.
func DecodeKillSwitchRequest(raw []byte) (KillSwitchRequest, error) {
	if err := Validate("killswitch_request", raw); err != nil {
		return KillSwitchRequest{}, err
	}
	var req KillSwitchRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return KillSwitchRequest{}, Wrap(CodeInvalid, "body does not match the kill switch request shape", err)
	}
	return req, nil
}

// DecodeKeyConsent strictly decodes the body of a key consent.
func DecodeKeyConsent(raw []byte) (KeyConsent, error) {
	if err := Validate("key_consent", raw); err != nil {
		return KeyConsent{}, err
	}
	var c KeyConsent
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return KeyConsent{}, Wrap(CodeInvalid, "body does not match the key consent shape", err)
	}
	return c, nil
}

// DecodeApprovalDecision strictly decodes the body of an approval decision.
func DecodeApprovalDecision(raw []byte) (ApprovalDecision, error) {
	if err := Validate("approval_decision", raw); err != nil {
		return ApprovalDecision{}, err
	}
	var d ApprovalDecision
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return ApprovalDecision{}, Wrap(CodeInvalid, "body does not match the approval decision shape", err)
	}
	return d, nil
}
