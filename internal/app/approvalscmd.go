package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// apiFlags are the flags every API-client command shares.
type apiFlags struct {
	server string
	tenant string
}

func (a *apiFlags) register(fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&a.server, "server", "http://127.0.0.1:8080", "ExoArmur server URL")
	fs.StringVar(&a.tenant, "tenant", "", "tenant (required)")
}

func (a *apiFlags) base() (string, error) {
	t, err := tenant.Parse(a.tenant)
	if err != nil {
		return "", fmt.Errorf("%w: --tenant: %v", errUsage, err)
	}
	return strings.TrimSuffix(a.server, "/") + "/v1/tenants/" + t.String(), nil
}

func apiKey() (string, error) {
	key := os.Getenv("EXOARMUR_API_KEY")
	if key == "" {
		return "", fmt.Errorf("%w: EXOARMUR_API_KEY is not set", errUsage)
	}
	return key, nil
}

// runApprovals: exoarmur approvals list --tenant T [--status pending].
func runApprovals(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return fmt.Errorf("%w: expected: exoarmur approvals list --tenant T [--status pending] (key in EXOARMUR_API_KEY)", errUsage)
	}
	var af apiFlags
	fs := newFlagSet("approvals list", env)
	af.register(fs)
	status := fs.String("status", "pending", "pending, approved, denied, expired, executed, or empty for all")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	base, err := af.base()
	if err != nil {
		return err
	}
	key, err := apiKey()
	if err != nil {
		return err
	}
	code, out, err := apiCall(ctx, "GET", base+"/approvals?status="+url.QueryEscape(*status), key, nil)
	return printResult(env, code, out, err)
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
	af.register(fs)
	reason := fs.String("reason", "", "why (required; audited)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	base, err := af.base()
	if err != nil {
		return err
	}
	key, err := apiKey()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"decision": decision, "reason": *reason})
	code, out, err := apiCall(ctx, "POST", base+"/intents/"+id+"/approvals", key, body)
	return printResult(env, code, out, err)
}

func printResult(env Env, code int, out []byte, err error) error {
	if err != nil {
		return err
	}
	env.Stdout.Write(out)
	if code >= 300 {
		return fmt.Errorf("server answered HTTP %d", code)
	}
	return nil
}
