package app

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// runPolicyActivate sends a policy directory to a running server, which
// checks it against its actions, archives it by hash and makes it the
// tenant's (or the global) active bundle on every node: authenticated,
// authorized (operator or admin of the tenant; the global bundle is a
// global power), audited as policy.activated.
func runPolicyActivate(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name: "policy activate",
		Args: "DIR (--tenant T | --global) --reason R [--json]",
		About: "Makes the bundle of policy directory DIR the active one of tenant T (--tenant), or the global default of every " +
			"tenant without its own (--global), through the API of a running server (the key in EXOARMUR_API_KEY: an operator or " +
			"admin of T; --global needs an admin key granted tenant \"system\"). The server validates the bundle against its own " +
			"actions (nothing is activated when it does not validate: every problem is named), archives it by hash, records " +
			"policy.activated with who, why and the old and new hash, and answers once every live node applied it. " +
			"Test it first: `exoarmur policy test DIR`, and `exoarmur replay --policy-dir DIR` on the recorded decisions.",
		Example: `policy activate ./policies --tenant acme --reason "tickets only on weekdays (CHG-17)"`,
	})
	var af apiFlags
	af.register(fs.FlagSet, "the tenant whose bundle to set")
	global := fs.Bool("global", false, "set the global bundle (the default of every tenant without its own) instead of one tenant's")
	reason := fs.String("reason", "", "why (required; audited)")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	pos, err := fs.parse(args, "DIR")
	if err != nil {
		return err
	}
	switch {
	case *global == (af.tenant != ""):
		return fs.usageErr("give exactly one of --tenant T and --global")
	case strings.TrimSpace(*reason) == "":
		return fs.usageErr("--reason is required")
	}
	if err := af.optionalTenant(); err != nil {
		return err
	}
	files, err := readPolicyFiles(pos[0])
	if err != nil {
		return err
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	act, confirmed, err := c.ActivatePolicy(ctx, af.tenant, contract.PolicyActivation{Reason: *reason, Files: files})
	if err != nil {
		return af.explain(err)
	}
	if !confirmed {
		fmt.Fprintln(env.Stderr, "exoarmur policy activate: the activation is written and audited, but the node that served it did not confirm applying it within the staleness bound (HTTP 202); check propagation")
	}
	if *asJSON {
		return printJSON(env, act)
	}
	scope := "the global bundle"
	if act.Scope != "global" {
		scope = "the bundle of tenant " + cell(act.Scope)
	}
	if act.Unchanged {
		_, err = fmt.Fprintf(env.Stdout, "%s is already %s: nothing was changed\n", scope, act.Hash)
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s is now %s (was %s): %s\n", scope, act.Hash, cell(act.Previous), propagationText(act.Propagation))
	return err
}

// readPolicyFiles reads the *.cedar files at the top of dir, as the
// server will load them (a policy file in a subdirectory is refused: it
// would not be part of the bundle).
func readPolicyFiles(dir string) ([]contract.PolicyFile, error) {
	root := os.DirFS(dir)
	var files []contract.PolicyFile
	var nested []string
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() || !strings.HasSuffix(p, ".cedar"):
			return nil
		case strings.Contains(p, "/"):
			nested = append(nested, p)
			return nil
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		files = append(files, contract.PolicyFile{Name: p, Source: string(b)})
		return nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("policy dir %s: %w", dir, err)
	case len(nested) > 0:
		return nil, fmt.Errorf("policy dir %s: %s: a policy file in a subdirectory is not part of the bundle: move it to the top level", dir, strings.Join(nested, ", "))
	case len(files) == 0:
		return nil, fmt.Errorf("policy dir %s: no *.cedar file (exoarmur policy init DIR writes the default bundle to start from)", filepath.Clean(dir))
	case len(files) > policy.MaxFiles:
		return nil, fmt.Errorf("policy dir %s: %d files: a bundle holds at most %d", dir, len(files), policy.MaxFiles)
	}
	slices.SortFunc(files, func(a, b contract.PolicyFile) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

// runPolicyActive says which bundle a tenant (or the global scope)
// decides under on the server that answers.
func runPolicyActive(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name: "policy active",
		Args: "[--tenant T] [--json]",
		About: "Shows which policy bundle tenant T decides under (its own activation, the global one, or the node's " +
			"--policy-dir or built-in default), or without --tenant the global bundle, with who activated it, when and why " +
			"(the key in EXOARMUR_API_KEY: an operator, admin or auditor of T; the global bundle: an admin granted tenant \"system\").",
		Example: "policy active --tenant acme",
	})
	var af apiFlags
	af.register(fs.FlagSet, "the tenant to show (default: the global bundle)")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	if err := af.optionalTenant(); err != nil {
		return err
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	a, err := c.GetPolicy(ctx, af.tenant)
	if err != nil {
		return af.explain(err)
	}
	if *asJSON {
		return printJSON(env, a)
	}
	tw := table(env)
	fmt.Fprintln(tw, "SCOPE\tHASH\tFROM\tSINCE\tBY\tREASON")
	since, by, why := "-", "-", "-"
	if a.Ptr != nil {
		since, by, why = a.Ptr.At.UTC().Format(time.RFC3339), cell(a.Ptr.Actor), cell(a.Ptr.Reason)
	}
	from := map[string]string{"tenant": "the tenant's activation", "global": "the global activation", "node": "the node's bundle (no activation)"}[a.Source]
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(a.Scope), a.Hash, from, since, by, why)
	if err := tw.Flush(); err != nil {
		return err
	}
	if a.Error != "" {
		fmt.Fprintf(env.Stderr, "exoarmur policy active: this node cannot apply the active bundle, so it denies the scope's actions: %s\n", a.Error)
	}
	return nil
}
