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
