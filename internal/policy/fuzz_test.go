package policy

import (
	"strings"
	"testing"
)

// FuzzURLHost: an untrusted http target either yields a lowercase,
// non-empty host (and host:port that starts with it) from an http(s) URL
// without user info, or is refused; PathLocal never panics.
func FuzzURLHost(f *testing.F) {
	for _, s := range []string{"http://Example.com:8080/x", "https://user@h/", "http://[::1]:80/", "ftp://h/", "http://h\x00/", "//h/x", "http:///x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		_ = PathLocal(target)
		host, hostPort, ok := URLHost(target)
		if !ok {
			if host != "" || hostPort != "" {
				t.Fatalf("refused %q but returned %q %q", target, host, hostPort)
			}
			return
		}
		if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
			t.Fatalf("accepted %q: not an http(s) URL", target)
		}
		if host != strings.ToLower(host) || hostPort != strings.ToLower(hostPort) || hostPort == "" {
			t.Fatalf("URLHost(%q) = %q %q", target, host, hostPort)
		}
	})
}

// FuzzParseCases: a case file either decodes into cases that each have a
// unique name, exactly one request and a decision of allow or deny, or is
// refused; running the cases never panics.
func FuzzParseCases(f *testing.F) {
	f.Add([]byte(`{"cases":[{"name":"a","action":{"principal":"p","role":"agent","action":"fs.read","target":"x"},"expect":{"decision":"allow"}}]}`))
	f.Add([]byte(`{"cases":[{"name":"o","operation":{"principal":"p","role":"auditor","operation":"approve","tenant":"acme","granted":["acme"]},"expect":{"decision":"deny","reasons":[]}}]}`))
	f.Add([]byte(`{"cases":[{"name":"t","action":{"action":"tickets.create","params":{"title":"x"},"time":"2026-12-05T00:00:00Z"},"expect":{"decision":"deny"}}]}`))
	f.Add([]byte(`{"cases":[]}`))
	types := []ActionType{{Name: "fs.read", Class: "A0", Effect: FS}, {Name: "tickets.create", Class: "A2", Effect: HTTP.WithParams(), Params: []Param{{Name: "title", Required: true}}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := ParseCases("f.json", data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range cf.Cases {
			if c.Name == "" || seen[c.Name] || (c.Action == nil) == (c.Operation == nil) || (c.Expect.Decision != "allow" && c.Expect.Decision != "deny") {
				t.Fatalf("accepted case %+v", c)
			}
			seen[c.Name] = true
		}
		if rs := RunCases(Default(), types, cf.Cases); len(rs) != len(cf.Cases) {
			t.Fatalf("%d results of %d cases", len(rs), len(cf.Cases))
		}
	})
}

// FuzzValidateFile: an untrusted policy file is either refused with
// problems that each name the file, or it validates and compiles.
func FuzzValidateFile(f *testing.F) {
	f.Add([]byte(Default().Source()))
	f.Add([]byte("@id(\"x\")\npermit (principal, action, resource is File) when { context.path_locl };\n"))
	f.Add([]byte("@id(\"x\")\n@scope(\"action\")\nforbid (principal, action == Action::\"tickets.create\", resource) unless { context.sizes.title < 200 };\n"))
	f.Add([]byte("permit (principal, action, resource);"))
	v, err := NewValidator([]ActionType{{Name: "fs.read", Class: "A0", Effect: FS}, {Name: "http.get", Class: "A0", Effect: HTTP},
		{Name: "tickets.create", Class: "A2", Effect: HTTP.WithParams(), Params: []Param{{Name: "title", Required: true}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		probs := v.File("f.cedar", src, map[string]string{})
		for _, p := range probs {
			if p.File != "f.cedar" || p.Message == "" {
				t.Fatalf("problem %+v", p)
			}
		}
		if len(probs) == 0 {
			if _, err := Compile("f.cedar", src); err != nil {
				t.Fatalf("validates but does not compile: %v", err)
			}
		}
	})
}
