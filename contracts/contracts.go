// Package contracts embeds ExoArmur's frozen wire contracts: the V1 JSON
// Schemas in v1/ and the HTTP API in openapi.yaml. V1 files never change (a
// test pins their checksums); new capability is added as new files or v2.
package contracts

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

// FS holds v1/*.schema.json and openapi.yaml.
//
//go:embed v1/*.schema.json openapi.yaml
var FS embed.FS

// BaseURL is the $id prefix of every V1 schema.
const BaseURL = "https://exoarmur.dev/contracts/v1/"

// V1Names returns the V1 schema names (file names without .schema.json), sorted.
func V1Names() []string {
	entries, _ := fs.ReadDir(FS, "v1") // embedded: cannot fail
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
