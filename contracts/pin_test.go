package contracts_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"reflect"
	"slices"
	"testing"

	"github.com/exoarmur/exoarmur/contracts"
)

// frozen pins every V1 schema. V1 is frozen: a change to a file here breaks
// every client that relies on it. New capability is additive: add a new file
// (and its line here) or start v2; never edit a pinned file.
var frozen = map[string]string{
	// Added with signed checkpoints (additive).
	"checkpoint.schema.json": "bbc39a37bca53249a3c930cfabab71df534a580609bf24c0f3ee5df750da710e",
	// Added with the auditor role: what POST /v1/keys accepts (additive:
	// key_request.schema.json with one more role).
	"key_create.schema.json": "8e3ab0d6fe77f7e7eadd0fb7fd95e24c0080e8de6eaf0859497bed12184cd3ca",
	// Added with the second admin's consent to approver keys (additive).
	"key_consent.schema.json": "c2775bc7d0b1c1809337476920ad789328fff21d1d7660e92ae60b7d6eb6bea6",
	// Added with in-doubt resolution (additive).
	"resolve_request.schema.json": "63cff6d4955ad302b30fb241d53ea97ffe55c85a6a0c2fbf4d7256fb562213b1",
	// Added with key management (additive).
	"key_request.schema.json": "9bf31fcfac9f61585f4198cb48eca5b211b00c88c64f7ace3dfb19ae6bb5f80f",
	// Added with operator approvals (additive).
	"approval_record.schema.json":   "99a4fedd76a82ac285bbf6fa51cf2faa5ce4b4304605b09b12c5e60fb836b4d0",
	"approval_decision.schema.json": "d4c9f404ebbaaf5303b899df9753eabee1604710e00d0b694392d228cfdbc328",
	// Added with the kill switches (additive).
	"killswitch_request.schema.json": "f2918bdec17910f5c487607bd82444ab09f5633a0d86ce8e475216e3af115c7b",
	"killswitch_state.schema.json":   "09f545ebc8e7fdc3b8be1202570dff050f8f746e7eeca1aa25c8283446fe9cff",
	// The first V1 set.
	"action_intent.schema.json":    "a133625a903ff59b0d50574d2498d07645ccfb4be98b452c689f75b4f9a738d7",
	"audit_record.schema.json":     "90a3a608c96a79be72842dc37a525f0e78c77e9edc8f6a9e1570066ab95699de",
	"decision.schema.json":         "5aaa799706f407f4ac7c04a2a21b867d227d5d181f04a548ac07f78d8fc800af",
	"execution_result.schema.json": "1df15dc113e5d38f12071f08681119feee23ed766ee01c12f089a40af09af79e",
	"intent_request.schema.json":   "12b1feea003be6957167f4a365c9d26dc43b9f0a2e0f80cf5b0530e78a669148",
	"proof_bundle.schema.json":     "1481204d81c3875f406d999d7ae32fc7361b40f7a25ce5897533c4ff31716ffd",
	"replay_report.schema.json":    "629f4b4998a93df3f68d10947cb09bcbaeb9d337cb4e1cb1dbebb7fffa700c3d",
}

// frozenV2 pins every v2 schema, like frozen: only the schemas whose shape
// v2 changes (the action name), never edited once pinned.
var frozenV2 = map[string]string{
	// The first v2 set: wider action names (package doc).
	"action_intent.schema.json":  "31a2909eeefa3cef27bb4032d396e55c5e50ab6b942791791a7ddec8322ee1a7",
	"intent_request.schema.json": "4ea8f9a0ec724356a177dce4bf2b75f6753dada6ad030c7fee81b3b79f7351c0",
	"key_create.schema.json":     "6f46e54d4c2b5ec847992d05cf332ebf7c203250fc9891f84f3ac7004b6deff3",
}

func TestV1SchemasAreFrozen(t *testing.T) { checkFrozen(t, "v1", frozen) }

func TestV2SchemasAreFrozen(t *testing.T) { checkFrozen(t, "v2", frozenV2) }

func checkFrozen(t *testing.T, dir string, frozen map[string]string) {
	seen := map[string]bool{}
	err := fs.WalkDir(contracts.FS, dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := contracts.FS.ReadFile(path)
		if err != nil {
			return err
		}
		name := d.Name()
		seen[name] = true
		sum := sha256.Sum256(b)
		want, ok := frozen[name]
		switch {
		case !ok:
			t.Errorf("%s/%s is not pinned: add its SHA-256 (new files are additive)", dir, name)
		case hex.EncodeToString(sum[:]) != want:
			t.Errorf("%s/%s changed (sha256 %x, pinned %s): pinned contracts are frozen; add a new file or version instead", dir, name, sum, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range frozen {
		if !seen[name] {
			t.Errorf("%s/%s was removed: pinned contracts are frozen", dir, name)
		}
	}
}

// TestTenantFieldsAreRequiredAndValidated: every V1 object that carries a
// tenant requires it and validates it with the tenant grammar, so no record
// about a tenant can omit it or smuggle a dot, wildcard or space.
func TestTenantFieldsAreRequiredAndValidated(t *testing.T) {
	const pattern = "^[a-z0-9][a-z0-9-]{0,62}$"
	// A replay mismatch may concern a line that is not a record at all, so
	// its tenant can be empty.
	exempt := map[string]bool{"replay_report.schema.json#/properties/mismatches/items": true}
	checked := 0
	var walk func(file, path string, node any)
	walk = func(file, path string, node any) {
		obj, ok := node.(map[string]any)
		if !ok {
			return
		}
		if props, ok := obj["properties"].(map[string]any); ok {
			if tp, ok := props["tenant"].(map[string]any); ok && !exempt[file+"#"+path] {
				checked++
				req, _ := obj["required"].([]any)
				if !slices.Contains(req, any("tenant")) {
					t.Errorf("%s#%s: tenant is not required", file, path)
				}
				if tp["pattern"] != pattern {
					t.Errorf("%s#%s: tenant pattern is %v, want %s", file, path, tp["pattern"], pattern)
				}
			}
			for name, sub := range props {
				walk(file, path+"/properties/"+name, sub)
			}
		}
		if items, ok := obj["items"]; ok {
			walk(file, path+"/items", items)
		}
	}
	for _, name := range contracts.V1Names() {
		raw, _ := contracts.V1Schema(name)
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		walk(name+".schema.json", "", doc)
	}
	for _, name := range contracts.V2Names() {
		raw, _ := contracts.V2Schema(name)
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		walk("v2/"+name+".schema.json", "", doc)
	}
	if checked < 6 {
		t.Fatalf("only %d tenant fields checked", checked)
	}
}

// v2Name is the v2 pattern of an action name (contracts package doc).
const v2Name = `[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+`

// TestV2IsV1ButTheActionName: each v2 schema is its V1 file with only the
// action name widened (and its $id, description and, for a stored
// intent, schema_version "v2"); every V1 schema that constrains an action
// name has its v2 (but key_request, superseded by key_create).
func TestV2IsV1ButTheActionName(t *testing.T) {
	decode := func(raw []byte, err error) map[string]any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	// The action name's schema in each, by name: the object holding it.
	at := map[string][]string{
		"intent_request": {"properties", "action"},
		"action_intent":  {"properties", "action"},
		"key_create":     {"properties", "actions", "items"},
	}
	names := contracts.V2Names()
	if !slices.Equal(names, []string{"action_intent", "intent_request", "key_create"}) {
		t.Fatalf("v2 schemas %v: say in the package doc why a schema is (not) v2", names)
	}
	for _, name := range names {
		v1, v2 := decode(contracts.V1Schema(name)), decode(contracts.V2Schema(name))
		if v2["$id"] != contracts.BaseURLV2+name+".schema.json" {
			t.Errorf("v2/%s: $id %v", name, v2["$id"])
		}
		delete(v1, "$id")
		delete(v2, "$id")
		delete(v1, "description")
		delete(v2, "description")
		if name == "action_intent" {
			p1, p2 := v1["properties"].(map[string]any), v2["properties"].(map[string]any)
			if !reflect.DeepEqual(p2["schema_version"], map[string]any{"const": "v2"}) {
				t.Errorf("v2/%s: schema_version %v", name, p2["schema_version"])
			}
			delete(p1, "schema_version")
			delete(p2, "schema_version")
		}
		path := at[name]
		n1, n2 := v1, v2
		for _, k := range path[:len(path)-1] {
			n1, n2 = n1[k].(map[string]any), n2[k].(map[string]any)
		}
		last := path[len(path)-1]
		s2 := n2[last].(map[string]any)
		want := map[string]any{"type": "string", "pattern": "^" + v2Name + "$", "minLength": 3.0, "maxLength": 128.0}
		if name == "key_create" {
			want = map[string]any{"type": "string", "pattern": `^(\*|A[0-3]|` + v2Name + `)$`, "maxLength": 128.0}
		}
		if !reflect.DeepEqual(s2, want) {
			t.Errorf("v2/%s: the action name is %v, want %v", name, s2, want)
		}
		delete(n1, last)
		delete(n2, last)
		if !reflect.DeepEqual(v1, v2) {
			t.Errorf("v2/%s differs from v1/%s beyond the action name", name, name)
		}
	}
	for _, name := range contracts.V1Names() {
		raw, _ := contracts.V1Schema(name)
		if bytes.Contains(raw, []byte(`[a-z]+\\.[a-z]+)`)) || bytes.Contains(raw, []byte(`[a-z]+\\.[a-z]+$`)) {
			if _, ok := at[name]; !ok && name != "key_request" {
				t.Errorf("v1/%s constrains an action name and has no v2", name)
			}
		}
	}
}
