package contract

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// PolicyActivation is the body of PUT /v1/tenants/{tenant}/policy and PUT
// /v1/policy: the files of the bundle to activate and why.
//
// It has no JSON Schema among the V1 contracts (they stay as they were):
// DecodePolicyActivation checks it here, with the same strict scan of
// untrusted JSON first; the bundle's own checks (names, sizes, cedar,
// the schema of the node's actions) are policy.LoadFiles'.
type PolicyActivation struct {
	Reason string       `json:"reason"`
	Files  []PolicyFile `json:"files"`
}

// PolicyFile is one file of a bundle: NAME.cedar and its cedar source.
type PolicyFile struct {
	Name   string `json:"name"`
	Source string `json:"source"`
}

// MaxReason bounds a recorded reason (a switch flip's, an activation's).
const MaxReason = 1024

// DecodePolicyActivation strictly decodes an activation body.
func DecodePolicyActivation(raw []byte) (PolicyActivation, error) {
	if err := checkStrictJSON(raw, MaxDepth); err != nil {
		return PolicyActivation{}, err
	}
	var req PolicyActivation
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return PolicyActivation{}, Wrap(CodeInvalid, `body does not match the policy activation shape {"reason": "...", "files": [{"name": "NAME.cedar", "source": "..."}]}`, err)
	}
	switch {
	case strings.TrimSpace(req.Reason) == "":
		return PolicyActivation{}, Errorf(CodeInvalid, "field %q: a reason is required: say why this bundle is activated (it is recorded)", "reason")
	case utf8.RuneCountInString(req.Reason) > MaxReason:
		return PolicyActivation{}, Errorf(CodeInvalid, "field %q: at most %d characters", "reason", MaxReason)
	case len(req.Files) == 0:
		return PolicyActivation{}, Errorf(CodeInvalid, "field %q: at least one policy file is required (exoarmur policy init DIR writes the default bundle to start from)", "files")
	}
	for i, f := range req.Files {
		if f.Name == "" {
			return PolicyActivation{}, Errorf(CodeInvalid, "field \"files[%d].name\": a file name is required", i)
		}
	}
	return req, nil
}

// MCPKeyPrefix starts the idempotency keys the MCP front end derives
// (internal/mcp): reserved, so that no REST caller can take the key of
// another principal's MCP call first.
const MCPKeyPrefix = "mcp-"
