// Package app is the exoarmur command: configuration with defaults and
// validation, wiring of the store, gate, executors and API, and one file per
// subcommand. cmd/exoarmur only calls Main.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Env is what a command sees of the outside world, so tests can run commands
// in-process.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the HTTP API (embedded NATS by default)", runServe},
		{"nats", "run a standalone NATS+JetStream server for multi-process setups", runNATS},
		{"keys", "manage API keys: keys create", runKeys},
		{"killswitch", "engage|disengage|status the global or a tenant kill switch (via the API)", runKillSwitch},
		{"approvals", "approvals list: the approval queue of a tenant (via the API)", runApprovals},
		{"approve", "approve INTENT_ID: an operator approves an intent (via the API)", runApprove},
		{"deny", "deny INTENT_ID: an operator denies an intent; final (via the API)", runDeny},
		{"audit", "audit verify|export for one tenant", runAudit},
		{"replay", "verify chains and recompute every decision; write a report", runReplay},
		{"demo", "run the deterministic golden demo in a temporary store", runDemo},
		{"check-config", "validate serve flags and exit", runCheckConfig},
	}
}

// errUsage marks an error that should be followed by usage text (exit 2).
var errUsage = errors.New("usage")

// IsUsage reports whether err is a usage error of a command (exit code 2).
func IsUsage(err error) bool { return errors.Is(err, errUsage) }

// Main runs the exoarmur command with args (without the program name) and
// returns the process exit code.
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
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(env.Stderr, "exoarmur %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(env.Stderr, "exoarmur %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(env.Stderr, "exoarmur: unknown command %q\n\n", args[0])
	usage(env.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "exoarmur: a governance gateway for the actions of AI agents and automation")
	fmt.Fprintln(w, "\nUsage: exoarmur <command> [flags]   (exoarmur <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
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
	fs := flag.NewFlagSet("exoarmur "+name, flag.ContinueOnError)
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
