package policy_test

import (
	"strings"
	"testing"

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
