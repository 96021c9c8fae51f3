package app

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// errPolicyTestFailed: some case of `policy test` failed (exit 1).
var errPolicyTestFailed = errors.New("policy test failed")

func runPolicy(ctx context.Context, env Env, args []string) error {
	return policyGroup.run(ctx, env, args)
}

var policyGroup = group{
	name: "policy",
	about: "Work with a policy directory: cedar files (*.cedar) of action policies (@scope(\"action\")) and the " +
		"operation policies that authorize the API (@scope(\"operation\")), served with `exoarmur serve --policy-dir DIR`. " +
		"See docs/POLICIES.md.",
	example: "policy validate ./policies",
	subs: []subcommand{
		{"init", "write the default bundle into a new policy directory, to start from", runPolicyInit},
		{"validate", "check a policy directory against the schema; print its bundle hash", runPolicyValidate},
		{"test", "run the test cases (*_test.json) of a policy directory against it", runPolicyTest},
		{"schema", "print the cedar schema policies are checked against", runPolicySchema},
		{"activate", "make a policy directory a tenant's (or the global) active bundle on a running server", runPolicyActivate},
		{"active", "show which bundle a tenant (or the global scope) decides under on a running server", runPolicyActive},
	},
}

// actionsFlag registers --actions-file on a policy command: the action
// types its policies are checked and decided against (the built-ins and
// the file's declared ones; secrets are not read).
func actionsFlag(fs *command) func() (*action.Registry, error) {
	path := fs.String("actions-file", "", "the actions file the server runs with (docs/ACTIONS.md): its declared action types join the built-ins; secrets are not read")
	return func() (*action.Registry, error) { return replayActions(*path) }
}

// loadPolicyDir reads and validates the bundle of dir against the schema
// of actions (policy.LoadDir).
func loadPolicyDir(dir string, actions *action.Registry) (*policy.Bundle, error) {
	v, err := policy.NewValidator(actions.PolicyTypes())
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := policy.LoadDir(os.DirFS(filepath.Dir(abs)), filepath.Base(abs), v)
	var probs *policy.Problems
	if errors.As(err, &probs) {
		probs.Dir = dir // as the user named it
	}
	return b, err
}

func runPolicyValidate(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name: "policy validate",
		Args: "DIR",
		About: "Parses every *.cedar file of DIR and type-checks each policy against the schema of the entities, actions and " +
			"context ExoArmur provides (exoarmur policy schema): an attribute, entity type or action that does not exist is " +
			"named with its file, line and @id. Prints the bundle's hash (what decisions record) when it validates; exit 1 when not.",
		Example: "policy validate ./policies",
	})
	actionsOf := actionsFlag(fs)
	asJSON := fs.Bool("json", false, "print the outcome as JSON: {\"valid\", \"hash\", \"policies\", \"problems\": [{file, line, column, policy_id, message}]}")
	pos, err := fs.parse(args, "DIR")
	if err != nil {
		return err
	}
	actions, err := actionsOf()
	if err != nil {
		return err
	}
	b, err := loadPolicyDir(pos[0], actions)
	var probs *policy.Problems
	if *asJSON && (err == nil || errors.As(err, &probs)) {
		out := validateOutput{Valid: err == nil, Problems: []problemJSON{}}
		if b != nil {
			out.Hash, out.Policies = b.Hash(), policyCount(b)
		}
		if probs != nil {
			for _, p := range probs.List {
				out.Problems = append(out.Problems, problemJSON{p.File, p.Line, p.Column, p.PolicyID, p.Message})
			}
		}
		if werr := printJSON(env, out); werr != nil {
			return werr
		}
		if err != nil {
			return fmt.Errorf("%w: policy dir %s: %d problem(s)", policy.ErrInvalidBundle, pos[0], len(probs.List))
		}
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "policy dir %s: valid, %d policies, bundle %s\n", pos[0], policyCount(b), b.Hash())
	return nil
}

type validateOutput struct {
	Valid    bool          `json:"valid"`
	Hash     string        `json:"hash,omitempty"`
	Policies int           `json:"policies"`
	Problems []problemJSON `json:"problems"`
}

type problemJSON struct {
	File     string `json:"file"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
	PolicyID string `json:"policy_id,omitempty"`
	Message  string `json:"message"`
}

func policyCount(b *policy.Bundle) int {
	n := 0
	for range b.All() {
		n++
	}
	return n
}

func runPolicyTest(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name: "policy test",
		Args: "DIR [--cases FILE]",
		About: "Validates DIR, then decides every case of its test files (DIR/*_test.json, or --cases FILE) against it: " +
			"each case is an action or an API operation request and the decision (and optionally the reasons) expected. " +
			"Prints PASS or FAIL per case, with what was expected and what came; exit 1 when any case fails.",
		Example: "policy test ./policies",
	})
	actionsOf := actionsFlag(fs)
	casesFile := fs.String("cases", "", "the case file (default every DIR/*_test.json)")
	pos, err := fs.parse(args, "DIR")
	if err != nil {
		return err
	}
	dir := pos[0]
	actions, err := actionsOf()
	if err != nil {
		return err
	}
	b, err := loadPolicyDir(dir, actions)
	if err != nil {
		return err
	}
	files := []string{*casesFile}
	if *casesFile == "" {
		if files, err = filepath.Glob(filepath.Join(dir, "*_test.json")); err != nil {
			return err
		}
		if len(files) == 0 {
			return fmt.Errorf("policy dir %s: no test files (*_test.json); give --cases FILE", dir)
		}
	}
	total, failed := 0, 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		cf, err := policy.ParseCases(filepath.Base(f), data)
		if err != nil {
			return err
		}
		for _, r := range policy.RunCases(b, actions.PolicyTypes(), cf.Cases) {
			total++
			if r.Passed {
				fmt.Fprintf(env.Stdout, "PASS %s: %s\n", filepath.Base(f), r.Name)
				continue
			}
			failed++
			fmt.Fprintf(env.Stdout, "FAIL %s: %s: %s\n", filepath.Base(f), r.Name, r.Failure)
		}
	}
	fmt.Fprintf(env.Stdout, "%d cases, %d passed, %d failed (bundle %s)\n", total, total-failed, failed, b.Hash())
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d cases", errPolicyTestFailed, failed, total)
	}
	return nil
}

func runPolicySchema(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name:    "policy schema",
		About:   "Prints the cedar schema (human-readable form) that policy validate, policy test and serve --policy-dir check policies against.",
		Example: "policy schema > exoarmur.cedarschema",
	})
	actionsOf := actionsFlag(fs)
	format := fs.String("format", "cedar", `"cedar" (human-readable) or "json" (cedar's JSON schema form)`)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	schemaOf := policy.Schema
	switch *format {
	case "cedar":
	case "json":
		schemaOf = policy.SchemaJSON
	default:
		return fs.usageErr("--format %q: must be cedar or json", *format)
	}
	actions, err := actionsOf()
	if err != nil {
		return err
	}
	s, err := schemaOf(actions.PolicyTypes())
	if err != nil {
		return err
	}
	_, err = env.Stdout.Write(s)
	return err
}

func runPolicyInit(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{
		Name: "policy init",
		Args: "DIR",
		About: "Creates DIR (which must not exist or be empty) holding the default bundle, split in actions.cedar (the action " +
			"policies) and operations.cedar (the API's authorization), and an example test file, to edit and serve with --policy-dir.",
		Example: "policy init ./policies",
	})
	noTests := fs.Bool("no-tests", false, "do not write the example test file (example_test.json)")
	pos, err := fs.parse(args, "DIR")
	if err != nil {
		return err
	}
	dir := pos[0]
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("policy init: %s is not empty; nothing was written", dir)
	}
	acts, ops, ok := strings.Cut(string(policy.Default().Source()), operationsMarker)
	if !ok {
		return errors.New("policy init: the default bundle has no operations section")
	}
	files := []struct{ name, body string }{
		{"actions.cedar", acts},
		{"operations.cedar", operationsMarker + ops},
	}
	if !*noTests {
		files = append(files, struct{ name, body string }{"example_test.json", exampleCases})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.body), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d files)\nnext: exoarmur policy validate %s\n", dir, len(files), dir)
	return nil
}

// operationsMarker starts the operation section of default.cedar.
const operationsMarker = "// ---------------------------------------------------------------------------\n// Authorization of API operations"

// exampleCases are policy init's test file.
//
//go:embed assets/example_test.json
var exampleCases string
