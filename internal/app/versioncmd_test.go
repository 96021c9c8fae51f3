package app

import (
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersion: version reports the build information the toolchain
// stamped, and says "devel" and "unknown" when it stamped none.
func TestVersion(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	const rev = "47663ee0c1b2a3d4e5f60718293a4b5c6d7e8f90"
	for _, c := range []struct {
		name  string
		info  *debug.BuildInfo // nil: no build information
		lines []string         // in the table
		json  string           // a fragment of --json
	}{
		{"stamped", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/exoarmur/exoarmur", Version: "v0.0.0-20260101000000-47663ee0c1b2"},
			Settings: vcs("vcs", "git", "vcs.revision", rev, "vcs.time", "2026-01-01T00:00:00Z", "vcs.modified", "false")},
			[]string{"exoarmur  v0.0.0-20260101000000-47663ee0c1b2", "module    github.com/exoarmur/exoarmur", "commit    " + rev + " (2026-01-01T00:00:00Z)", "go        go1.26.8 "},
			`"version":"v0.0.0-20260101000000-47663ee0c1b2","commit":"` + rev + `","commit_time":"2026-01-01T00:00:00Z","modified":false,"go":"go1.26.8"`},
		{"modified", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/exoarmur/exoarmur", Version: "(devel)"},
			Settings: vcs("vcs.revision", rev, "vcs.time", "2026-01-01T00:00:00Z", "vcs.modified", "true")},
			[]string{"exoarmur  devel", "commit    " + rev + " (2026-01-01T00:00:00Z, with uncommitted changes)"},
			`"version":"devel","commit":"` + rev + `","commit_time":"2026-01-01T00:00:00Z","modified":true`},
		{"not stamped", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/exoarmur/exoarmur", Version: "(devel)"}},
			[]string{"exoarmur  devel", "commit    unknown (not stamped: "},
			`"version":"devel","commit":"unknown","go":"go1.26.8"`},
		{"no build information", nil,
			[]string{"exoarmur  devel", "module    github.com/exoarmur/exoarmur", "commit    unknown (not stamped: "},
			`{"module":"github.com/exoarmur/exoarmur","version":"devel","commit":"unknown","go":"go`},
	} {
		t.Run(c.name, func(t *testing.T) {
			readBuildInfo = func() (*debug.BuildInfo, bool) { return c.info, c.info != nil }
			t.Cleanup(func() { readBuildInfo = debug.ReadBuildInfo })
			code, out, stderr := run("version")
			if code != 0 || strings.Count(out, "\n") != 4 {
				t.Fatalf("version: exit %d\n%s%s", code, out, stderr)
			}
			for _, l := range c.lines {
				if !strings.Contains(out, "\n"+l) && !strings.HasPrefix(out, l) {
					t.Errorf("version lacks the line %q:\n%s", l, out)
				}
			}
			for _, args := range [][]string{{"version", "--json"}, {"--version", "--json"}} {
				code, out, _ = run(args...)
				var v map[string]any
				if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !strings.Contains(out, c.json) {
					t.Errorf("%v: exit %d\n%s", args, code, out)
				}
			}
		})
	}
}
