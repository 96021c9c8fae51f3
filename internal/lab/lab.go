// Package lab is the exoarmur-lab command: the evidence and load tools that
// stay out of the production binary. It runs the production serve and keys
// create (internal/app) with an evidence clock and seeded keys, the
// cold-reviewer run (internal/reality) and the load harness
// (internal/bench). Fixed clocks and seeded keys exist only here and in
// tests. cmd/exoarmur-lab only calls Run.
package lab

import (
	"context"
	"flag"
	"time"

	"github.com/exoarmur/exoarmur/internal/app"
)

// Env is what a command sees of the outside world (app.Env).
type Env = app.Env

func commands() []app.Command {
	return []app.Command{
		{Name: "serve", Summary: "exoarmur serve, plus --evidence-clock (a stepping clock and sequential request IDs) and --evidence-seed (API-created keys from a seed)", Run: runServe},
		{Name: "keys", Summary: "keys create: exoarmur keys create, plus --evidence-seed (a key derived from a seed)", Run: runKeys},
		{Name: "reality", Summary: "the cold-reviewer run: reality run [--local] | verify | client | sink (make reality, make reality-verify)", Run: runReality},
		{Name: "bench", Summary: "load harness: start a server, drive it over loopback HTTP, report throughput and latency (bench replay | bench soak | bench export | bench noisy)", Run: runBench},
	}
}

func program() app.Program {
	return app.Program{Name: "exoarmur-lab", Intro: "ExoArmur's evidence and load tools (never a production binary; the gateway is exoarmur)",
		Commands: commands(), Width: 8}
}

// errUsage marks an error that should be followed by usage text (exit 2).
var errUsage = app.ErrUsage

// Main runs the exoarmur-lab command with args (without the program name)
// and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int { return program().Main(ctx, args, env) }

// Run is main's body: it wires signals and exits.
func Run() { program().Run() }

func newFlagSet(name string, env Env) *flag.FlagSet { return app.NewFlagSet("exoarmur-lab", name, env) }

func parseFlags(fs *flag.FlagSet, args []string) error { return app.ParseFlags(fs, args) }

// validRetention: 0 (keep for good) or at least a second, as serve requires.
func validRetention(d time.Duration) bool { return d == 0 || d >= time.Second }
