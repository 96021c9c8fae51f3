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
	"slices"
	"syscall"
)

// Env is what a command sees of the outside world, so tests can run commands
// in-process.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

// Command is one subcommand of a program.
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, env Env, args []string) error
}

// Program is a command line of subcommands: exoarmur, and exoarmur-lab
// (internal/lab), which share this dispatch, its exit codes and help.
type Program struct {
	Name     string // "exoarmur"
	Intro    string // the first line of the usage text
	Commands []Command
	Width    int // of the command column in the usage text
}

// Main runs the program with args (without the program name) and returns
// the process exit code: 0, 1 for a failure, 2 for a usage error.
func (p Program) Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		p.usage(env.Stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		p.usage(env.Stdout)
		return 0
	case "--version", "-version":
		if slices.ContainsFunc(p.Commands, func(c Command) bool { return c.Name == "version" }) {
			args = append([]string{"version"}, args[1:]...)
		}
	case "help":
		if len(args) == 1 {
			p.usage(env.Stdout)
			return 0
		}
		// help CMD [SUB] is CMD [SUB] -h.
		args = append(slices.Clone(args[1:]), "-h")
	}
	for _, c := range p.Commands {
		if c.Name != args[0] {
			continue
		}
		err := c.Run(ctx, env, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, ErrUsage):
			fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, c.Name, err)
			return 2
		default:
			fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, c.Name, err)
			return 1
		}
	}
	fmt.Fprintf(env.Stderr, "%s: unknown command %q\n\n", p.Name, args[0])
	p.usage(env.Stderr)
	return 2
}

func (p Program) usage(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n", p.Name, p.Intro)
	fmt.Fprintf(w, "\nUsage: %s <command> [flags]   (%s <command> -h for its flags)\n", p.Name, p.Name)
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %-*s %s\n", p.Width, c.Name, c.Summary)
	}
}

// Run is main's body: it wires signals, runs the program and exits.
func (p Program) Run() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := p.Main(ctx, os.Args[1:], Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// NewFlagSet returns the flag set of program's subcommand name, writing
// its help to env.Stderr.
func NewFlagSet(program, name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(program+" "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// ParseFlags parses args into fs; a bad flag or a stray argument is a
// usage error (ErrUsage).
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	return nil
}

func program() Program {
	return Program{Name: "exoarmur", Intro: "a governance gateway for the actions of AI agents and automation", Commands: commands(), Width: 13}
}

func commands() []Command {
	return []Command{
		{"init", "create the store and its first admin key (printed once)", runInit},
		{"serve", "run the HTTP API (embedded NATS by default)", runServe},
		{"nats", "run a standalone NATS+JetStream server for multi-process setups", runNATS},
		{"keys", "keys create|list|revoke|consent: manage API keys", runKeys},
		{"killswitch", "engage|disengage|status the global or a tenant kill switch (via the API)", runKillSwitch},
		{"approvals", "approvals list: the approval queue of a tenant (via the API)", runApprovals},
		{"approve", "approve INTENT_ID: an operator approves an intent (via the API)", runApprove},
		{"deny", "deny INTENT_ID: an operator denies an intent; final (via the API)", runDeny},
		{"audit", "audit verify|export for one tenant", runAudit},
		{"policy", "policy init|validate|test|schema: write and check a policy directory", runPolicy},
		{"mcp", "mcp --tenant T: serve MCP over stdio, bridged to a running server's endpoint (via the API)", runMCP},
		{"replay", "verify chains and recompute every decision; write a report", runReplay},
		{"demo", "run the deterministic golden demo in a temporary store", runDemo},
		{"check-config", "validate serve flags and exit", runCheckConfig},
		{"version", "the module version and VCS commit of this binary", runVersion},
	}
}

// ErrUsage marks an error that should be followed by usage text (exit 2).
var ErrUsage = errors.New("usage")

var errUsage = ErrUsage

// IsUsage reports whether err is a usage error of a command (exit code 2).
func IsUsage(err error) bool { return errors.Is(err, ErrUsage) }

// Main runs the exoarmur command with args (without the program name) and
// returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int { return program().Main(ctx, args, env) }

// Run is main's body: it wires signals and exits.
func Run() { program().Run() }
