package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/killswitch"
)

var killSwitchGroup = group{
	name: "killswitch",
	about: "Engage, disengage or read the global or a tenant's kill switch through the API of a running server (the key in EXOARMUR_API_KEY). " +
		"While a switch is engaged nothing it covers executes; a change is audited, and the command returns once every live node applied it (or says that was not confirmed).",
	example: `killswitch engage --tenant acme --reason "incident 42"`,
	subs: []subcommand{
		{"engage", "stop every execution the switch covers (--reason required)", killSwitchSub("engage")},
		{"disengage", "let executions run again (--reason required)", killSwitchSub("disengage")},
		{"status", "read the switch", killSwitchSub("status")},
	},
}

// runKillSwitch talks to a running server: kill switches are changed
// through the API, so the change is authenticated, audited and propagated
// exactly like any other operator action.
func runKillSwitch(ctx context.Context, env Env, args []string) error {
	return killSwitchGroup.run(ctx, env, args)
}

func killSwitchSub(sub string) func(context.Context, Env, []string) error {
	return func(ctx context.Context, env Env, args []string) error { return runKillSwitchSub(ctx, env, sub, args) }
}

func runKillSwitchSub(ctx context.Context, env Env, sub string, args []string) error {
	h := cmdHelp{Name: "killswitch " + sub, Args: "[--tenant T] --reason R [--json]",
		About:   "Changes the global kill switch, or tenant T's with --tenant (the key in EXOARMUR_API_KEY; audited).",
		Example: "killswitch " + sub + ` --tenant acme --reason "incident 42"`}
	if sub == "status" {
		h.Args, h.About, h.Example = "[--tenant T] [--json]", "Reads the global kill switch, or tenant T's with --tenant (the key in EXOARMUR_API_KEY).", "killswitch status --tenant acme"
	}
	var af apiFlags
	fs := newCommand(env, h)
	reason := new(string)
	if sub == "status" {
		af.register(fs.FlagSet, "tenant switch to read (default: the global switch)")
	} else {
		af.register(fs.FlagSet, "tenant switch to change (default: the global switch)")
		reason = fs.String("reason", "", "why (required; audited)")
	}
	asJSON := fs.Bool("json", false, `print the server's answer as JSON instead of a table or line`)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	if err := af.optionalTenant(); err != nil {
		return err
	}
	if sub != "status" && strings.TrimSpace(*reason) == "" {
		return fs.usageErr("--reason is required")
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if sub == "status" {
		r, err := c.GetKillSwitch(ctx, af.tenant)
		if err != nil {
			return af.explain(err)
		}
		if *asJSON {
			return printJSON(env, map[string]any{"state": r})
		}
		tw := table(env)
		fmt.Fprintln(tw, "SCOPE\tSTATE\tSINCE\tBY\tREASON\tFRESH")
		since, by, why := "-", cell(r.Actor), cell(r.Reason)
		if r.Revision == 0 {
			by, why = "-", "never set: a fresh store starts engaged"
		} else if !r.At.IsZero() {
			since = r.At.UTC().Format(time.RFC3339)
		}
		fresh := "yes"
		if !r.Fresh {
			fresh = "no (not confirmed current: treated as engaged)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(r.Scope), engagedWord(r.Engaged), since, by, why, fresh)
		return tw.Flush()
	}
	ch, confirmed, err := c.SetKillSwitch(ctx, af.tenant, contract.KillSwitchRequest{Engaged: sub == "engage", Reason: *reason})
	if err != nil {
		return af.explain(err)
	}
	if !confirmed {
		fmt.Fprintln(env.Stderr, "exoarmur killswitch: the change is written and audited, but the node that served it did not confirm applying it within the staleness bound (HTTP 202); check propagation")
	}
	if *asJSON {
		return printJSON(env, ch)
	}
	scope := "global kill switch"
	if ch.Current.Scope != killswitch.ScopeGlobal && ch.Current.Scope != "" {
		scope = "kill switch of tenant " + cell(ch.Current.Scope)
	}
	_, err = fmt.Fprintf(env.Stdout, "%s %s (was %s): %s\n", scope, engagedWord(ch.Current.Engaged), engagedWord(ch.Previous.Engaged), propagationText(ch.Propagation))
	return err
}

func engagedWord(engaged bool) string {
	if engaged {
		return "engaged"
	}
	return "disengaged"
}
