package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// runKillSwitch talks to a running server: kill switches are changed
// through the API, so the change is authenticated, audited and propagated
// exactly like any other operator action.
func runKillSwitch(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || (args[0] != "engage" && args[0] != "disengage" && args[0] != "status") {
		return fmt.Errorf("%w: expected: exoarmur killswitch engage|disengage|status [--tenant T] [--reason R] (key in EXOARMUR_API_KEY)", errUsage)
	}
	sub := args[0]
	var af apiFlags
	fs := newFlagSet("killswitch "+sub, env)
	af.register(fs, "tenant switch to change (default: the global switch)")
	reason := fs.String("reason", "", "why (required for engage and disengage; audited)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if af.tenant != "" {
		if _, err := tenant.Parse(af.tenant); err != nil {
			return fmt.Errorf("%w: --tenant: %v", errUsage, err)
		}
	}
	if sub != "status" && strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if sub == "status" {
		r, err := c.GetKillSwitch(ctx, af.tenant)
		if err != nil {
			return err
		}
		return printJSON(env, map[string]any{"state": r})
	}
	ch, confirmed, err := c.SetKillSwitch(ctx, af.tenant, contract.KillSwitchRequest{Engaged: sub == "engage", Reason: *reason})
	if err != nil {
		return err
	}
	if !confirmed {
		fmt.Fprintln(env.Stderr, "exoarmur killswitch: the change is written and audited, but the node that served it did not confirm applying it within the staleness bound (HTTP 202); check propagation")
	}
	return printJSON(env, ch)
}
