// Package lab is the exoarmur-lab command: the evidence and load tools that
// stay out of the production binary. It runs the production serve and keys
// create (internal/app) with an evidence clock and seeded keys, the
// cold-reviewer run (internal/reality) and the load harness
// (internal/bench). Fixed clocks and seeded keys exist only here and in
// tests. cmd/exoarmur-lab only calls Run.
package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exoarmur/exoarmur/internal/app"
)

// Env is what a command sees of the outside world (app.Env).
type Env = app.Env

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "exoarmur serve, plus --evidence-clock (a stepping clock and sequential request IDs)", runServe},
		{"keys", "keys create: exoarmur keys create, plus --evidence-seed (a key derived from a seed)", runKeys},
		{"reality", "the cold-reviewer run: reality run [--local] | verify | client | sink (make reality, make reality-verify)", runReality},
		{"bench", "load harness: start a server, drive it over loopback HTTP, report throughput and latency (bench replay | bench soak)", runBench},
	}
}

// errUsage marks an error that should be followed by usage text (exit 2).
var errUsage = errors.New("usage")

// Main runs the exoarmur-lab command with args (without the program name)
// and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage) || app.IsUsage(err):
			fmt.Fprintf(env.Stderr, "exoarmur-lab %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(env.Stderr, "exoarmur-lab %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(env.Stderr, "exoarmur-lab: unknown command %q\n\n", args[0])
	usage(env.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "exoarmur-lab: ExoArmur's evidence and load tools (never a production binary; the gateway is exoarmur)")
	fmt.Fprintln(w, "\nUsage: exoarmur-lab <command> [flags]   (exoarmur-lab <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

// Run is main's body: it wires signals and exits.
func Run() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet("exoarmur-lab "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// validRetention: 0 (keep for good) or at least a second, as serve requires.
func validRetention(d time.Duration) bool { return d == 0 || d >= time.Second }
