package app

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// run runs the exoarmur command in-process and returns its exit code,
// stdout and stderr.
func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

// groups are the commands made of subcommands.
var groups = map[string]group{"keys": keysGroup, "killswitch": killSwitchGroup, "approvals": approvalsGroup, "audit": auditGroup, "policy": policyGroup}

// TestEveryCommandAnswersHelp: every command and subcommand answers -h
// and --help with exit 0 and, on stdout, its usage line, its flags and an
// example; a group lists its subcommands. A command missing from the table
// fails, so a new one needs its help.
func TestEveryCommandAnswersHelp(t *testing.T) {
	store := []string{"-data-dir", "-nats-url"}
	api := []string{"-server"}
	leaves := map[string][]string{
		"init":                 append([]string{"-tenant", "-name", "-owner"}, store...),
		"serve":                append([]string{"-listen", "-allow-host", "-tls-cert", "-policy-dir", "-mcp-config"}, store...),
		"check-config":         append([]string{"-listen", "-approval-rules"}, store...),
		"nats":                 {"-data-dir", "-listen", "-users", "-name", "-cluster-listen", "-routes"},
		"keys create":          append([]string{"-name", "-role", "-tenant", "-actions", "-cert-cn", "-actions-file"}, store...),
		"keys list":            store,
		"keys revoke":          store,
		"keys consent":         append([]string{"-reason"}, api...),
		"killswitch engage":    append([]string{"-tenant", "-reason"}, api...),
		"killswitch disengage": append([]string{"-tenant", "-reason"}, api...),
		"killswitch status":    append([]string{"-tenant"}, api...),
		"approvals list":       append([]string{"-tenant", "-status", "-json"}, api...),
		"approve":              append([]string{"-tenant", "-reason"}, api...),
		"deny":                 append([]string{"-tenant", "-reason"}, api...),
		"audit verify":         append([]string{"-tenant", "-trusted-key", "-checkpoint", "-mcp-config"}, store...),
		"audit export":         append([]string{"-tenant", "-out", "-audit-key"}, store...),
		"audit checkpoint":     append([]string{"-tenant"}, store...),
		"audit pubkey":         {"-audit-key", "-data-dir", "-all"},
		"audit rotate-key":     {"-audit-key", "-data-dir"},
		"replay":               append([]string{"-from-export", "-tenant", "-out", "-trusted-key", "-checkpoint", "-bundle", "-policy-dir", "-mcp-config"}, store...),
		"demo":                 {"-keep"},
		"mcp":                  {"-tenant", "-server"},
		"policy init":          {"-no-tests"},
		"policy validate":      {"-json", "-actions-file"},
		"policy test":          {"-cases", "-actions-file"},
		"policy schema":        {"-format", "-actions-file"},
		"policy activate":      {"-tenant", "-global", "-reason", "-server", "-json"},
		"policy active":        {"-tenant", "-server", "-json"},
		"version":              {"-json"},
	}
	var names []string
	for _, c := range commands() {
		g, ok := groups[c.Name]
		if !ok {
			names = append(names, c.Name)
			continue
		}
		for _, h := range []string{"-h", "--help", "help"} {
			code, out, stderr := run(c.Name, h)
			if code != 0 || !strings.HasPrefix(out, "Usage: exoarmur "+c.Name+" ") || !strings.Contains(out, "\nSubcommands:\n") ||
				!strings.Contains(out, "\nExample:\n  exoarmur "+c.Name+" ") || stderr != "" {
				t.Errorf("exoarmur %s %s: exit %d\n%s%s", c.Name, h, code, out, stderr)
			}
			for _, s := range g.subs {
				if !strings.Contains(out, "\n  "+s.name+" ") {
					t.Errorf("exoarmur %s %s does not list %s:\n%s", c.Name, h, s.name, out)
				}
			}
		}
		for _, s := range g.subs {
			names = append(names, c.Name+" "+s.name)
		}
	}
	for _, name := range names {
		want, ok := leaves[name]
		if !ok {
			t.Errorf("exoarmur %s: not in this test's table", name)
			continue
		}
		delete(leaves, name)
		for _, h := range []string{"-h", "--help"} {
			args := append(strings.Fields(name), h)
			code, out, stderr := run(args...)
			if code != 0 || !strings.HasPrefix(out, "Usage: exoarmur "+name) || !strings.Contains(out, "\nFlags:\n") ||
				!strings.Contains(out, "\nExample:\n  exoarmur "+name) || stderr != "" {
				t.Errorf("exoarmur %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
				continue
			}
			for _, f := range want {
				if !strings.Contains(out, "\n  "+f+" ") && !strings.Contains(out, "\n  "+f+"\n") {
					t.Errorf("exoarmur %s does not list %s:\n%s", strings.Join(args, " "), f, out)
				}
			}
		}
		// help CMD is CMD -h.
		if code, out, _ := run(append([]string{"help"}, strings.Fields(name)...)...); code != 0 || !strings.HasPrefix(out, "Usage: exoarmur "+name) {
			t.Errorf("exoarmur help %s: exit %d\n%s", name, code, out)
		}
	}
	for name := range leaves {
		t.Errorf("%s: in the table but not a command", name)
	}
	if code, out, _ := run("--help"); code != 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("exoarmur --help: exit %d\n%s", code, out)
	}
}

// TestUnknownSubcommandsListTheValidOnes: a missing or unknown subcommand
// is a usage error (exit 2) naming every valid one.
func TestUnknownSubcommandsListTheValidOnes(t *testing.T) {
	for name, g := range groups {
		for _, args := range [][]string{{name}, {name, "bogus"}, {name, "--tenant", "acme"}} {
			code, out, stderr := run(args...)
			if code != 2 || out != "" {
				t.Errorf("exoarmur %s: exit %d, want 2\n%s%s", strings.Join(args, " "), code, out, stderr)
			}
			for _, s := range g.subs {
				if !strings.Contains(stderr, s.name) {
					t.Errorf("exoarmur %s does not name %s:\n%s", strings.Join(args, " "), s.name, stderr)
				}
			}
		}
	}
	if code, _, stderr := run("keys", "bogus"); code != 2 || !strings.Contains(stderr, `unknown subcommand "bogus" of exoarmur keys; valid: create, list, revoke, consent`) {
		t.Errorf("keys bogus: exit %d\n%s", code, stderr)
	}
}

// TestFlagsAroundPositionals: flags are accepted before, between and
// after the positional argument; a missing or extra one is a usage error
// that shows the usage line.
func TestFlagsAroundPositionals(t *testing.T) {
	srv := clienttest.Start(t)
	agent, err := client.New(srv.URL, client.WithAPIKey(srv.Keys[clienttest.Agent]))
	if err != nil {
		t.Fatal(err)
	}
	op := srv.Keys[clienttest.Operator]
	for i, order := range []func(id string) []string{
		func(id string) []string {
			return []string{"approve", "--tenant", "acme", "--reason", "r", "--server", srv.URL, id}
		},
		func(id string) []string {
			return []string{"approve", id, "--tenant", "acme", "--reason", "r", "--server", srv.URL}
		},
		func(id string) []string {
			return []string{"approve", "--tenant", "acme", id, "--reason", "r", "--server", srv.URL}
		},
		func(id string) []string {
			return []string{"deny", "--server", srv.URL, "--tenant=acme", "--reason", "r", "--", id}
		},
	} {
		v, _, err := agent.Propose(context.Background(), "acme", contract.IntentRequest{Action: "fs.write", Target: "f.txt", Params: map[string]string{"content": "x"},
			IdempotencyKey: "order-" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		args := order(v.Intent.ID)
		if code, out, stderr := cli(t, op, args...); code != 0 || !strings.Contains(out, v.Intent.ID) {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	for _, args := range [][]string{
		{"approve", "--tenant", "acme", "--reason", "r"},
		{"approve", "in_a", "in_b", "--tenant", "acme", "--reason", "r"},
		{"keys", "revoke"},
		{"keys", "list", "stray"},
	} {
		code, out, stderr := cli(t, op, args...)
		usage := "\n  exoarmur " + args[0]
		if args[0] == "keys" {
			usage += " " + args[1]
		}
		if code != 2 || out != "" || !strings.Contains(stderr, usage) || !strings.Contains(stderr, "-h lists the flags") {
			t.Errorf("%v: exit %d, want 2 with the usage line\n%s%s", args, code, out, stderr)
		}
	}

	// keys revoke on the store, the data dir before or after the ID.
	dir := t.TempDir()
	var ids []string
	for _, name := range []string{"a", "b"} {
		code, _, stderr := run("keys", "create", "--data-dir", dir, "--name", name, "--role", "agent", "--tenant", "acme", "--actions", "A0")
		i := strings.Index(stderr, "key_")
		if code != 0 || i < 0 {
			t.Fatalf("keys create: exit %d\n%s", code, stderr)
		}
		ids = append(ids, strings.Fields(stderr[i:])[0])
	}
	for i, args := range [][]string{{"keys", "revoke", "--data-dir", dir, ids[0]}, {"keys", "revoke", ids[1], "--data-dir", dir}} {
		if code, out, stderr := run(args...); code != 0 || out != "revoked "+ids[i]+" ("+[]string{"a", "b"}[i]+")\n" {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	if code, out, _ := run("keys", "list", "--data-dir", dir); code != 0 || strings.Count(out, "REVOKED") != 2 || !slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(out, id) }) {
		t.Errorf("keys list after the revocations: exit %d\n%s", code, out)
	}
}
