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

var approvalsGroup = group{
	name:    "approvals",
	about:   "Read a tenant's approval queue through the API of a running server (the key in EXOARMUR_API_KEY).",
	example: "approvals list --tenant acme",
	subs: []subcommand{
		{"list", "the approval queue of a tenant, one line per intent", runApprovalsList},
	},
}

// runApprovals: exoarmur approvals list --tenant T [--status pending] [--json].
func runApprovals(ctx context.Context, env Env, args []string) error {
	return approvalsGroup.run(ctx, env, args)
}

func runApprovalsList(ctx context.Context, env Env, args []string) error {
	var af apiFlags
	fs := newCommand(env, cmdHelp{
		Name:    "approvals list",
		Args:    "--tenant T [--status pending] [--json]",
		About:   "Lists the approvals of tenant T with the given status, one line per intent (the key in EXOARMUR_API_KEY).",
		Example: "approvals list --tenant acme --status pending",
	})
	af.register(fs.FlagSet, "tenant (required)")
	status := fs.String("status", "pending", "pending, approved, denied, expired, executed, or empty for all")
	asJSON := fs.Bool("json", false, `print the server's answer as JSON ({"tenant","approvals":[{approval,intent,lineage}]}) instead of a table`)
	if _, err := fs.parse(args); err != nil {
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
		return af.explain(err)
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
	tw := table(env)
	fmt.Fprintln(tw, "INTENT\tACTION\tCLASS\tSTATUS\tVOTES\tEXPIRES\tPROPOSER\tTARGET")
	for _, it := range items {
		a := it.Approval
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", cell(it.Intent.ID), cell(a.Action), cell(a.Class), cell(a.Status),
			len(a.Approvals), a.Required, a.ExpiresAt.UTC().Format(time.RFC3339), cell(a.Proposer), cell(it.Intent.Target))
	}
	return tw.Flush()
}

// table is a tabwriter on stdout for the commands' tables: columns two
// spaces apart.
func table(env Env) *tabwriter.Writer { return tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0) }

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
	h := cmdHelp{
		Name:    decision,
		Args:    "INTENT_ID --tenant T --reason R [--json]",
		About:   "An operator approves intent INTENT_ID of tenant T; it executes once it has the approvals its class needs (the key in EXOARMUR_API_KEY; audited).",
		Example: `approve in_0123456789abcdef --tenant acme --reason "checked the target"`,
	}
	if decision == "deny" {
		h.About = "An operator denies intent INTENT_ID of tenant T; a denial is final (the key in EXOARMUR_API_KEY; audited)."
		h.Example = `deny in_0123456789abcdef --tenant acme --reason "wrong host"`
	}
	var af apiFlags
	fs := newCommand(env, h)
	af.register(fs.FlagSet, "tenant (required)")
	reason := fs.String("reason", "", "why (required; audited)")
	asJSON := fs.Bool("json", false, "print the approval record the server answered as JSON instead of a line")
	pos, err := fs.parse(args, "INTENT_ID")
	if err != nil {
		return err
	}
	id := pos[0]
	if err := tenant.ValidIntentID(id); err != nil {
		return fs.usageErr("%v", err)
	}
	if strings.TrimSpace(*reason) == "" {
		return fs.usageErr("--reason is required")
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
		return af.explain(err)
	}
	if *asJSON {
		return printJSON(env, rec)
	}
	verb := map[string]string{"approve": "approved", "deny": "denied"}[decision]
	_, err = fmt.Fprintf(env.Stdout, "%s %s in tenant %s: %s (%s) proposed by %s; %d/%d approvals, status %s, expires %s\n", verb, cell(rec.IntentID), cell(rec.Tenant),
		cell(rec.Action), cell(rec.Class), cell(rec.Proposer), len(rec.Approvals), rec.Required, cell(rec.Status), rec.ExpiresAt.UTC().Format(time.RFC3339))
	return err
}
