package gate

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// benchSecrets is an injected action.SecretSource (the secrets of
// testdata/tickets.yaml, never read from the process).
type benchSecrets map[string]string

func (s benchSecrets) LookupEnv(name string) (string, bool) { v, ok := s[name]; return v, ok }
func (s benchSecrets) ReadFile(path string) ([]byte, error) {
	if v, ok := s[path]; ok {
		return []byte(v), nil
	}
	return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
}

// userBundleSource is the default bundle's source followed by n generated
// action-scoped policies, the kind a tenant's own bundle adds: forbids and
// permits on the built-in and declared actions (and on actions of other
// registries), with conditions on the role, class, host, params, their
// sizes and the decision's time. None of them denies the two requests
// benchmarked below; several of them are evaluated for each.
func userBundleSource(n int) []byte {
	templates := []func(i int) string{
		// Auditors never write, whatever the class.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action in [Action::"fs.write", Action::"fs.delete"], resource is File)
when { context.role == "auditor" && context.class != "A%d" };`, 9+i)
		},
		// Blocked paths in the sandbox.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action, resource == File::"secrets/key-%d.pem");`, i)
		},
		// Revoked or suspended keys, named.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal == Principal::"key_suspended_%d", action, resource);`, i)
		},
		// Blocked hosts, for every http action.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action, resource is Url)
when { context.host == "blocked-%d.example" || context.host_port == "blocked-%d.example:443" };`, i, i)
		},
		// Ticket titles longer than a team's limit.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action == Action::"tickets.create", resource is Url)
when { context has sizes && context.sizes has title && context.sizes.title > %d };`, 200+10*i)
		},
		// No tickets at the weekend, nor at night.
		func(i int) string {
			days := []string{"saturday", "sunday"}
			return fmt.Sprintf(`forbid (principal, action in [Action::"tickets.create", Action::"crm.update_%d"], resource is Url)
when { context has time && (context.time.weekday == "%s" || context.time.hour < %d || context.time.hour >= 22) };`, i, days[i%2], i%6)
		},
		// Content a team never sends.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action == Action::"tickets.create", resource is Url)
when { context has params && context.params has title && context.params.title like "*DROP TABLE t%d*" };`, i)
		},
		// Writes to other teams' trackers.
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action == Action::"tickets.create", resource is Url)
unless { context.host != "tracker-%d.internal" || context.role == "operator" };`, i)
		},
		// Actions of other registries: permitted on an internal host by a role.
		func(i int) string {
			return fmt.Sprintf(`permit (principal, action == Action::"deploy.run_%d", resource is Url)
when { context.scheme_ok && context.host == "deploy-%d.internal" && context.role == "operator" && context.class == "A3" };`, i, i)
		},
		// Reads of one host without the allowlist, for agents.
		func(i int) string {
			return fmt.Sprintf(`permit (principal, action == Action::"http.get", resource is Url)
when { context.scheme_ok && context.host == "status-%d.internal" && context.role == "agent" };`, i)
		},
		// Deletes of A3 only in office hours on weekdays (built-in fs
		// actions do not see the time: on the class and role).
		func(i int) string {
			return fmt.Sprintf(`forbid (principal, action == Action::"fs.delete", resource is File)
when { context.class == "A3" && context.role == "agent" && !context.path_local && %d > 0 };`, i+1)
		},
		// Declared reads permitted on an allowlisted host in the week.
		func(i int) string {
			return fmt.Sprintf(`permit (principal, action == Action::"tickets.read", resource is Url)
when { context has time && context.time.weekday != "sunday" && context.allowlist.contains(context.host_port) && context.time.hour >= %d };`, i%8)
		},
	}
	var b strings.Builder
	b.Write(policy.Default().Source())
	b.WriteString("\n// Generated user policies.\n")
	for i := range n {
		fmt.Fprintf(&b, "\n@id(\"user-%02d\")\n@scope(\"action\")\n%s\n", i, templates[i%len(templates)](i/len(templates)))
	}
	return []byte(b.String())
}

// BenchmarkDecideUserBundle: Decide under the default bundle and under a
// user bundle of at least 50 action policies (issue 17), for a built-in fs
// write and a declared http action (tickets.create: params, their sizes and
// the time in the context, its URL rendered from the template).
func BenchmarkDecideUserBundle(b *testing.B) {
	user, err := policy.Compile("user.cedar", userBundleSource(48))
	if err != nil {
		b.Fatal(err)
	}
	total, actionScoped := 0, 0
	for _, p := range user.All() {
		total++
		if p.Annotations()["scope"] == "action" {
			actionScoped++
		}
	}
	if total < 50 || actionScoped < 50 {
		b.Fatalf("user bundle: %d policies, %d action-scoped; want at least 50", total, actionScoped)
	}

	data, err := os.ReadFile("../action/testdata/tickets.yaml")
	if err != nil {
		b.Fatal(err)
	}
	actions, err := action.ParseRegistry("tickets.yaml", data, action.ParseOptions{Secrets: benchSecrets{
		"TICKETS_TOKEN": "s3cr3t-token-value", "/run/secrets/tickets": "file-secret-value\n",
	}})
	if err != nil {
		b.Fatal(err)
	}
	if spec, ok := actions.Lookup("tickets.create"); !ok || !spec.Effect.HasParams() {
		b.Fatalf("tickets.create: %+v, %v", spec, ok)
	}

	at := time.Date(2026, 12, 2, 10, 15, 0, 0, time.UTC) // a Wednesday morning
	fsWrite := func(bundle *policy.Bundle) Input {
		in := baseInput()
		in.Time, in.Approval.ExpiresAt = at, at.Add(time.Hour)
		in.PolicyHash = bundle.Hash()
		return in
	}
	ticket := func(bundle *policy.Bundle) Input {
		in := fsWrite(bundle)
		in.Intent.Action, in.Intent.Class, in.Intent.Target = "tickets.create", contract.A2, "ops"
		in.Intent.Params = map[string]string{"title": "Disk full on db-3", "body": "Free space below 5% since 09:50."}
		in.Intent.Hash, _ = in.Intent.ComputeHash()
		in.Approval.IntentHash = in.Intent.Hash
		in.Allowlist = []string{"127.0.0.1:8099", "127.0.0.1:9000"}
		return in
	}
	for _, bc := range []struct {
		name   string
		bundle *policy.Bundle
	}{{"default", policy.Default()}, {fmt.Sprintf("user%d", actionScoped), user}} {
		for _, rc := range []struct {
			name  string
			input func(*policy.Bundle) Input
			// deny mutates the input into one the user bundle forbids
			// (nil: the default bundle's allow stays an allow).
			deny func(*Input)
		}{
			{"fs.write", fsWrite, func(in *Input) { in.Intent.Target = "secrets/key-2.pem" }},
			{"tickets.create", ticket, func(in *Input) { in.Time = time.Date(2026, 12, 6, 10, 15, 0, 0, time.UTC) }}, // a Sunday
		} {
			b.Run(bc.name+"/"+rc.name, func(b *testing.B) {
				in := rc.input(bc.bundle)
				if d := Decide(in, bc.bundle, actions); d.Verdict != contract.Allow {
					b.Fatalf("Decide = %s %v, want allow\nchecks: %+v", d.Verdict, d.Reasons, d.Checks)
				}
				// The generated policies are live: one of them denies.
				if bc.bundle == user {
					denied := rc.input(bc.bundle)
					rc.deny(&denied)
					if d := Decide(denied, bc.bundle, actions); d.Verdict != contract.Deny || d.Reasons[0] != ReasonPolicyDenied {
						b.Fatalf("Decide of the forbidden request = %s %v, want deny %s", d.Verdict, d.Reasons, ReasonPolicyDenied)
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					if Decide(in, bc.bundle, actions).Verdict != contract.Allow {
						b.Fatal("not allowed")
					}
				}
			})
		}
	}
}
