package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/policy"
)

// builtinTypes mirrors internal/action's built-ins (policy cannot import
// action: action imports policy); TestSchemaOfTheRegistry in internal/app
// checks the registry's own.
var builtinTypes = []policy.ActionType{
	{Name: "fs.read", Effect: policy.FS}, {Name: "fs.write", Effect: policy.FS}, {Name: "fs.delete", Effect: policy.FS},
	{Name: "http.get", Effect: policy.HTTP}, {Name: "http.post", Effect: policy.HTTP},
}

func TestDefaultBundleValidates(t *testing.T) {
	v, err := policy.NewValidator(builtinTypes)
	if err != nil {
		t.Fatal(err)
	}
	if probs := v.File("default.cedar", policy.Default().Source(), map[string]string{}); len(probs) != 0 {
		t.Fatalf("the default bundle does not validate: %v", probs)
	}
}

func TestValidationNamesFileAndLine(t *testing.T) {
	v, err := policy.NewValidator(builtinTypes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, src, want string
	}{
		{"unknown attribute", "@id(\"ok\")\npermit (principal, action, resource is File) when { context.path_local };\n\n@id(\"typo\")\npermit (principal, action, resource is File)\nwhen { context.path_locl };\n", "t.cedar:4:1: policy typo:"},
		{"unknown entity type", "@id(\"x\")\npermit (principal, action, resource is Bucket);\n", "t.cedar:1:1: policy x:"},
		{"unknown action", "@id(\"x\")\npermit (principal, action == Action::\"fs.chmod\", resource);\n", "policy x:"},
		{"wrong type", "@id(\"x\")\npermit (principal, action, resource is Url) when { context.host > 3 };\n", "policy x:"},
		{"operation attribute in an action policy", "@id(\"x\")\n@scope(\"action\")\npermit (principal, action, resource is File) when { context.granted.contains(\"acme\") };\n", "policy x:"},
		{"no id", "permit (principal, action, resource is File);\n", "has no @id"},
		{"bad scope", "@id(\"x\")\n@scope(\"both\")\npermit (principal, action, resource is File);\n", "@scope must be"},
		{"does not parse", "permit (principal, action, resource is File) when { context. };\n", "t.cedar"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			probs := v.File("t.cedar", []byte(tc.src), map[string]string{})
			if len(probs) == 0 {
				t.Fatal("validates")
			}
			found := false
			for _, p := range probs {
				found = found || strings.Contains(p.String(), tc.want)
			}
			if !found {
				t.Fatalf("problems %v; want one naming %q", probs, tc.want)
			}
		})
	}
}

// A declared action's policy decides on its params, their sizes and the
// time; the schema knows exactly the params the action declares.
func TestParamsAndTime(t *testing.T) {
	types := append(builtinTypes, policy.ActionType{Name: "tickets.create", Effect: policy.HTTP.WithParams(),
		Params: []policy.Param{{Name: "title", Required: true}, {Name: "body"}}})
	v, err := policy.NewValidator(types)
	if err != nil {
		t.Fatal(err)
	}
	src := `@id("short-titles-on-weekdays")
@scope("action")
permit (principal, action == Action::"tickets.create", resource is Url)
when {
  context.sizes.title < 200 &&
  context.time.weekday != "saturday" && context.time.weekday != "sunday"
}
unless { context.params has body && context.params.body == "" };
`
	if probs := v.File("t.cedar", []byte(src), map[string]string{}); len(probs) != 0 {
		t.Fatalf("does not validate: %v", probs)
	}
	for _, bad := range []string{
		`@id("x") permit (principal, action == Action::"tickets.create", resource) when { context.params.titel == "" };`,
		`@id("x") permit (principal, action == Action::"tickets.create", resource) when { context.sizes.title == "long" };`,
		`@id("x") permit (principal, action == Action::"http.get", resource) when { context.params.title == "" };`,
		`@id("x") permit (principal, action == Action::"tickets.create", resource) when { context.params.body == "" };`, // optional: needs has
	} {
		if probs := v.File("t.cedar", []byte(bad), map[string]string{}); len(probs) == 0 {
			t.Errorf("validates: %s", bad)
		}
	}
	b, err := policy.Compile("t.cedar", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	wed := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	sat := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		params map[string]string
		at     time.Time
		allow  bool
	}{
		{"short title on a wednesday", map[string]string{"title": "printer on fire"}, wed, true},
		{"199 characters", map[string]string{"title": strings.Repeat("é", 199)}, wed, true},
		{"200 characters", map[string]string{"title": strings.Repeat("é", 200)}, wed, false},
		{"saturday", map[string]string{"title": "printer on fire"}, sat, false},
		{"empty body", map[string]string{"title": "t", "body": ""}, wed, false},
		{"no title: evaluation error denies", map[string]string{}, wed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := policy.Evaluate(b, policy.Request{PrincipalID: "key_1", Role: "agent", Action: "tickets.create", Class: "A2",
				Effect: policy.HTTP.WithParams(), Target: "http://127.0.0.1:9000/tickets", Allowlist: []string{"127.0.0.1"},
				Params: tc.params, Time: tc.at})
			if res.Allowed != tc.allow {
				t.Fatalf("allowed %v, want %v (%+v)", res.Allowed, tc.allow, res)
			}
		})
	}
}
