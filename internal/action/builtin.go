package action

import (
	"net/http"
	"sync"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// The built-in action types.
const (
	FSRead   = "fs.read"
	FSWrite  = "fs.write"
	HTTPGet  = "http.get"
	HTTPPost = "http.post"
	FSDelete = "fs.delete"
)

// builtins are the built-in registrations, in registry order.
var builtins = []Registration{
	{Type: FSRead, Class: contract.A0, ReadOnly: true, Description: "relative path inside the tenant sandbox",
		Effect: policy.FS, Executor: Executor{Kind: SandboxRead}},
	{Type: FSWrite, Class: contract.A1, Description: "relative path inside the tenant sandbox; params.content is written",
		Effect: policy.FS, Executor: Executor{Kind: SandboxWrite}},
	{Type: HTTPGet, Class: contract.A0, ReadOnly: true, Description: "http(s) URL whose host is on the allowlist",
		Effect: policy.HTTP, Executor: Executor{Kind: HTTPRequest, Method: http.MethodGet}},
	{Type: HTTPPost, Class: contract.A2, Description: "http(s) URL whose host is on the allowlist; params.body is sent",
		Effect: policy.HTTP, Executor: Executor{Kind: HTTPRequest, Method: http.MethodPost}},
	{Type: FSDelete, Class: contract.A3, Description: "relative path inside the tenant sandbox",
		Effect: policy.FS, Executor: Executor{Kind: SandboxDelete}},
}

var builtin = sync.OnceValue(func() *Registry {
	r, err := New(builtins...)
	if err != nil {
		panic(err) // the built-ins are part of the binary; TestBuiltin builds them too
	}
	return r
})

// Builtin returns the registry of the built-in action types.
func Builtin() *Registry { return builtin() }
