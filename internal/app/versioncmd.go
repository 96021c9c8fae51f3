package app

import (
	"context"
	"fmt"
	goruntime "runtime"
	"runtime/debug"
	"text/tabwriter"
)

// readBuildInfo is runtime/debug.ReadBuildInfo (tests replace it).
var readBuildInfo = debug.ReadBuildInfo

// versionInfo is what `exoarmur version` reports, read from the build
// information the Go toolchain embeds in the binary.
type versionInfo struct {
	Module  string `json:"module"`
	Version string `json:"version"` // the main module's version; "devel" when the build did not stamp one
	// Commit is the VCS revision the binary was built from; "unknown"
	// when the build did not stamp it (go build stamps it inside a git
	// checkout unless -buildvcs=false; go run and go test do not, nor does
	// a build in a git worktree, whose .git is a file).
	Commit     string `json:"commit"`
	CommitTime string `json:"commit_time,omitempty"`
	// Modified: the checkout had uncommitted changes; absent when unknown.
	Modified *bool  `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func buildVersion() versionInfo {
	v := versionInfo{Module: "github.com/exoarmur/exoarmur", Version: "devel", Commit: "unknown", Go: goruntime.Version(), Platform: goruntime.GOOS + "/" + goruntime.GOARCH}
	bi, ok := readBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			m := s.Value == "true"
			v.Modified = &m
		}
	}
	return v
}

// runVersion: exoarmur version [--json].
func runVersion(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{Name: "version", Args: "[--json]",
		About:   "Prints the module version and the VCS commit this binary was built from, as the Go toolchain stamped them (\"devel\" and \"unknown\" when it did not).",
		Example: "version --json"})
	asJSON := fs.Bool("json", false, "print the version as JSON")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	v := buildVersion()
	if *asJSON {
		return printJSON(env, v)
	}
	commit := v.Commit
	switch {
	case v.Commit == "unknown":
		commit += " (not stamped: built by go run or go test, with -buildvcs=false, outside a git checkout or in a git worktree)"
	case v.Modified != nil && *v.Modified:
		commit += " (" + v.CommitTime + ", with uncommitted changes)"
	case v.CommitTime != "":
		commit += " (" + v.CommitTime + ")"
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "exoarmur\t%s\n", v.Version)
	fmt.Fprintf(tw, "module\t%s\n", v.Module)
	fmt.Fprintf(tw, "commit\t%s\n", commit)
	fmt.Fprintf(tw, "go\t%s %s\n", v.Go, v.Platform)
	return tw.Flush()
}
