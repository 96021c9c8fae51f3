// Package contracts embeds ExoArmur's frozen wire contracts: the V1 JSON
// Schemas in v1/, the v2 JSON Schemas in v2/ and the HTTP API in
// openapi.yaml. Pinned files never change (a test pins their checksums);
// new capability is added as new files or a new version.
//
// # v2
//
// v2 widens one thing: an action's name. A V1 name is two lower-case
// words joined by a dot (^[a-z]+\.[a-z]+$, at most 64 bytes); a v2 name
// is two or more dot-separated segments of lower-case letters, digits, _
// and - (each starting with a letter or digit), 3..128 bytes
// (^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$): "tickets.create_v2",
// "chat.post-message", "mcp.fs.read_text_file". Every V1 name is a v2
// name. v2/ holds exactly the schemas whose shape carries an action name
// under a pattern, each identical to its V1 file but for that pattern
// (and its $id, description, and, for action_intent, schema_version
// "v2"):
//
//   - intent_request: the body of a proposal; chosen for a body whose
//     action is not a V1 name (a V1 name's body is checked against V1,
//     exactly as before);
//   - action_intent: the stored intent of an action whose name only v2
//     allows, schema_version "v2"; an intent of a V1 name is v1, always
//     (a v2 intent of a V1 name, or a v1 intent of a wider name, is
//     refused by every reader);
//   - key_create: the body of POST /v1/keys granting such an action by
//     name; chosen when a grant is not "*", a class or a V1 name.
//
// Not in v2, because their shape does not change: key_request (the
// first key body, superseded by key_create, which the server checks
// instead), approval_record (its action is any string), decision,
// execution_result, audit_record (it names no action; an intent.proposed
// record of a v2 intent is a v1 record whose payload holds the v2
// intent), and the rest, which name no action.
package contracts

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

// FS holds v1/*.schema.json, v2/*.schema.json and openapi.yaml.
//
//go:embed v1/*.schema.json v2/*.schema.json openapi.yaml
var FS embed.FS

// BaseURL is the $id prefix of every V1 schema.
const BaseURL = "https://exoarmur.dev/contracts/v1/"

// BaseURLV2 is the $id prefix of every v2 schema.
const BaseURLV2 = "https://exoarmur.dev/contracts/v2/"

// V1Names returns the V1 schema names (file names without .schema.json), sorted.
func V1Names() []string { return names("v1") }

// V2Names returns the v2 schema names, sorted: only the schemas whose
// shape v2 changes.
func V2Names() []string { return names("v2") }

func names(dir string) []string {
	entries, _ := fs.ReadDir(FS, dir) // embedded: cannot fail
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".schema.json"))
	}
	slices.Sort(out)
	return out
}

// V1Schema returns the bytes of a V1 schema by name (e.g. "intent_request").
func V1Schema(name string) ([]byte, error) {
	return FS.ReadFile("v1/" + name + ".schema.json")
}

// V2Schema returns the bytes of a v2 schema by name (e.g. "intent_request").
func V2Schema(name string) ([]byte, error) {
	return FS.ReadFile("v2/" + name + ".schema.json")
}
