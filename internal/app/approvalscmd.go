package app

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// runApprovals: exoarmur approvals list --tenant T [--status pending] [--json].
func runApprovals(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return fmt.Errorf("%w: expected: exoarmur approvals list --tenant T [--status pending] [--json] (key in EXOARMUR_API_KEY)", errUsage)
	}
	var af apiFlags
	fs := newFlagSet("approvals list", env)
	af.register(fs, "tenant (required)")
	status := fs.String("status", "pending", "pending, approved, denied, expired, executed, or empty for all")
	asJSON := fs.Bool("json", false, `print the server's answer as JSON ({"tenant","approvals":[{approval,intent,lineage}]}) instead of a table`)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := af.requireTenant(); err != nil {
		return err
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	items, err := c.ListApprovals(ctx, af.tenant, *status)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, map[string]any{"tenant": af.tenant, "approvals": items})
	}
	return approvalTable(env, af.tenant, *status, items)
}

// approvalTable prints the queue for a person: one line per approval.
// Targets and names come from agents, so control characters are quoted.
func approvalTable(env Env, tn, status string, items []client.ApprovalItem) error {
	if len(items) == 0 {
		what := status + " approvals"
		if status == "" {
			what = "approvals"
		}
		_, err := fmt.Fprintf(env.Stdout, "no %s in tenant %s\n", what, tn)
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INTENT\tACTION\tCLASS\tTARGET\tSTATUS\tVOTES\tPROPOSER\tEXPIRES")
	for _, it := range items {
		a := it.Approval
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", cell(it.Intent.ID), cell(a.Action), cell(a.Class), cell(it.Intent.Target),
			cell(a.Status), len(a.Approvals), a.Required, cell(a.Proposer), a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// cell is s for a table cell: quoted if it holds a control character (a
// tab or newline would forge columns or rows), "-" if empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) {
		return strconv.Quote(s)
	}
	return s
}

// runApprove: exoarmur approve INTENT_ID --tenant T --reason R.
func runApprove(ctx context.Context, env Env, args []string) error {
	return runVote(ctx, env, args, "approve")
}

// runDeny: exoarmur deny INTENT_ID --tenant T --reason R.
func runDeny(ctx context.Context, env Env, args []string) error {
	return runVote(ctx, env, args, "deny")
}

func runVote(ctx context.Context, env Env, args []string, decision string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: expected: exoarmur %s INTENT_ID --tenant T --reason R (key in EXOARMUR_API_KEY)", errUsage, decision)
	}
	id := args[0]
	if err := tenant.ValidIntentID(id); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var af apiFlags
	fs := newFlagSet(decision, env)
	af.register(fs, "tenant (required)")
	reason := fs.String("reason", "", "why (required; audited)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	if err := af.requireTenant(); err != nil {
		return err
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	rec, err := c.DecideApproval(ctx, af.tenant, id, contract.ApprovalDecision{Decision: decision, Reason: *reason})
	if err != nil {
		return err
	}
	return printJSON(env, rec)
}
