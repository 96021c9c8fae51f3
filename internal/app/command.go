package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// cmdHelp is what `exoarmur NAME -h` prints besides the flags: the
// synopsis, what the command does and one example.
type cmdHelp struct {
	Name    string // "approve", "keys revoke"
	Args    string // the synopsis after the name: "INTENT_ID --tenant T --reason R"
	About   string // what it does, a sentence or two
	Example string // one command line, without the program name's "exoarmur "
}

// command is a command's flag set and help. Its flags may come before and
// after the positional arguments (parse).
type command struct {
	*flag.FlagSet
	env     Env
	program string
	help    cmdHelp
}

// newCommand returns the flag set of exoarmur's command h.Name.
func newCommand(env Env, h cmdHelp) *command { return newProgramCommand("exoarmur", env, h) }

func newProgramCommand(program string, env Env, h cmdHelp) *command {
	fs := flag.NewFlagSet(program+" "+h.Name, flag.ContinueOnError)
	c := &command{FlagSet: fs, env: env, program: program, help: h}
	// parse prints what is asked for: the help on stdout, errors through
	// the caller; the flag package itself prints nothing.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return c
}

// usageLine is "exoarmur NAME ARGS".
func (c *command) usageLine() string {
	return strings.TrimSpace(c.program + " " + c.help.Name + " " + c.help.Args)
}

// usageErr is a usage error (exit 2) followed by the usage line.
func (c *command) usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s\n  %s   (%s %s -h lists the flags)", ErrUsage, fmt.Sprintf(format, a...), c.usageLine(), c.program, c.help.Name)
}

// printHelp writes the usage line, what the command does, its flags
// (flag.PrintDefaults) and the example to stdout.
func (c *command) printHelp() {
	w := c.env.Stdout
	fmt.Fprintf(w, "Usage: %s\n", c.usageLine())
	if c.help.About != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(c.help.About, 78))
	}
	n := 0
	c.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		c.SetOutput(w)
		c.PrintDefaults()
		c.SetOutput(io.Discard)
	}
	if c.help.Example != "" {
		fmt.Fprintf(w, "\nExample:\n  %s %s\n", c.program, c.help.Example)
	}
}

// parse parses args, whose flags may come before, between and after the
// positional arguments; names are the positional arguments required, in
// order (none: any is an error). "--" ends the flags. -h or --help prints
// the help and returns flag.ErrHelp (exit 0).
func (c *command) parse(args []string, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := c.FlagSet.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printHelp()
				return nil, err
			}
			return nil, c.usageErr("%v", err)
		}
		rest := c.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...) // after "--", everything is positional
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) < len(names) {
		return nil, c.usageErr("missing %s", names[len(pos)])
	}
	if len(pos) > len(names) {
		return nil, c.usageErr("unexpected argument %q", pos[len(names)])
	}
	return pos, nil
}

// subcommand is one subcommand of a command group (keys, killswitch,
// approvals, audit).
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

// group is a command made of subcommands: `exoarmur NAME SUB [flags]`.
type group struct {
	name    string
	about   string
	example string
	subs    []subcommand
}

func (g group) names() string {
	var ns []string
	for _, s := range g.subs {
		ns = append(ns, s.name)
	}
	return strings.Join(ns, "|")
}

// run dispatches args to a subcommand; -h, --help or help print the
// group's help (exit 0); a missing or unknown subcommand is a usage error
// that lists the valid ones.
func (g group) run(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: expected a subcommand: exoarmur %s %s   (exoarmur %s -h lists them)", ErrUsage, g.name, g.names(), g.name)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		g.printHelp(env.Stdout)
		return flag.ErrHelp
	}
	for _, s := range g.subs {
		if s.name == args[0] {
			return s.run(ctx, env, args[1:])
		}
	}
	return fmt.Errorf("%w: unknown subcommand %q of exoarmur %s; valid: %s", ErrUsage, args[0], g.name, strings.ReplaceAll(g.names(), "|", ", "))
}

func (g group) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: exoarmur %s %s [flags]   (exoarmur %s SUBCOMMAND -h lists its flags)\n", g.name, g.names(), g.name)
	if g.about != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(g.about, 78))
	}
	fmt.Fprintln(w, "\nSubcommands:")
	width := 0
	for _, s := range g.subs {
		width = max(width, len(s.name))
	}
	for _, s := range g.subs {
		fmt.Fprintf(w, "  %-*s  %s\n", width, s.name, s.summary)
	}
	if g.example != "" {
		fmt.Fprintf(w, "\nExample:\n  exoarmur %s\n", g.example)
	}
}

// wrap breaks s into lines of at most width characters at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		switch {
		case n == 0:
		case n+1+len(word) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
