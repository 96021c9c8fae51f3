package app

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

var keysGroup = group{
	name: "keys",
	about: "Manage API keys and certificate principals. create, list and revoke work on the store directly (--data-dir with the server stopped, " +
		"or --nats-url while it runs); consent goes through the API with an admin's key.",
	example: "keys list --data-dir ./data",
	subs: []subcommand{
		{"create", "create a key (printed once) or a client-certificate principal", func(ctx context.Context, env Env, args []string) error {
			return KeysCreate(ctx, env, args, KeysHooks{})
		}},
		{"list", "list every principal, its grants and its state", func(ctx context.Context, env Env, args []string) error {
			return runKeysAdmin(ctx, env, "list", args)
		}},
		{"revoke", "revoke a principal: it never authenticates again", func(ctx context.Context, env Env, args []string) error {
			return runKeysAdmin(ctx, env, "revoke", args)
		}},
		{"consent", "an admin consents to a key that waits for a second admin (via the API)", runKeysConsent},
	},
}

func runKeys(ctx context.Context, env Env, args []string) error { return keysGroup.run(ctx, env, args) }

// KeysHooks let another command (cmd/exoarmur-lab) run keys create with
// more flags and its own sources of randomness and time. The zero value is
// the production keys create: crypto/rand and the wall clock.
type KeysHooks struct {
	// Flags registers extra flags on keys create's flag set.
	Flags func(fs *flag.FlagSet)
	// Sources is called once the flags are parsed and valid; a nil rand or
	// now keeps the production source.
	Sources func(env Env) (rand io.Reader, now func() time.Time, err error)
}

// KeysCreate is `keys create` (args after "create") with hooks.
func KeysCreate(ctx context.Context, env Env, args []string, h KeysHooks) error {
	var sc StoreConfig
	var tenants, actions stringList
	fs := newCommand(env, cmdHelp{
		Name: "keys create",
		Args: "--name N --role agent|auditor|operator|admin --tenant T --actions A [--data-dir D | --nats-url U]",
		About: "Creates a principal on the store directly and prints its API key once on stdout (or, with --cert-cn, " +
			"registers a client-certificate principal and prints its ID). While a server holds the data dir, the key is " +
			"created through that server's API instead, with the admin key in EXOARMUR_API_KEY (--server or EXOARMUR_SERVER names it).",
		Example: "keys create --data-dir ./data --name bot --role agent --tenant acme --actions fs.read,fs.write",
	})
	sc.register(fs.FlagSet)
	name := fs.String("name", "", "principal name (required)")
	role := fs.String("role", "", "agent, auditor (reads the tenant's intents, approvals, kill switch and whole audit; acts on nothing), operator or admin (required)")
	fs.Var(&tenants, "tenant", "tenant the key may act in (repeatable, required); \"system\" grants the global powers (global kill switch, every tenant's keys, metrics) to an admin")
	fs.Var(&actions, "actions", "action types (fs.read,...), classes (A0..A3) or * (required)")
	expires := fs.Duration("expires", 0, "key lifetime, e.g. 720h (default: no expiry)")
	owner := fs.String("owner", "", "the person the key is for (default: --name); four eyes counts distinct owners, so give one person's keys one owner")
	actionsFile := fs.String("actions-file", "", "the actions file the server runs with (docs/ACTIONS.md), so --actions may name its declared actions; secrets are not read")
	certCN := fs.String("cert-cn", "", "register a client-certificate principal with this subject CN instead of an API key (mutual TLS)")
	var af apiFlags
	af.registerServer(fs.FlagSet)
	if h.Flags != nil {
		h.Flags(fs.FlagSet)
	}
	if _, err := fs.parse(args); err != nil {
		return err
	}
	// Action names are case sensitive: stringList lowercased; classes are upper.
	for i, a := range actions {
		if len(a) == 2 && a[0] == 'a' {
			actions[i] = "A" + a[1:]
		}
	}
	req := auth.CreateRequest{Name: *name, Role: *role, Tenants: tenants, Actions: actions, Owner: *owner, CreatedBy: "cli"}
	if *expires < 0 {
		return fs.usageErr("--expires: must be positive")
	}
	if *expires > 0 {
		req.ExpiresAt = time.Now().Add(*expires)
	}
	registry, err := replayActions(*actionsFile)
	if err != nil {
		return err
	}
	if err := req.ValidateFor(registry); err != nil {
		return fs.usageErr("%v", err)
	}
	var src io.Reader = rand.Reader
	now := time.Now
	if h.Sources != nil {
		r, n, err := h.Sources(env)
		if err != nil {
			return err
		}
		if r != nil {
			src = r
		}
		if n != nil {
			now = n
		}
	}
	st, err := openStore(ctx, sc, "exoarmur-keys", nil)
	if errors.Is(err, natsstore.ErrDataDirInUse) {
		if *certCN != "" {
			return fmt.Errorf("%w; client-certificate principals are created on the store only: stop the server, or use --nats-url with an external NATS", err)
		}
		if h.Sources != nil {
			return fmt.Errorf("%w; seeded keys are created on the store only: stop the server, or use --nats-url with an external NATS", err)
		}
		return keysCreateThroughAPI(ctx, env, &af, sc, req, *expires)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	keys := auth.NewKeys(st.Principals, src, now)
	keys.SetActions(registry)
	if *certCN != "" {
		p, err := keys.CreateCert(ctx, *certCN, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s\n", p.ID)
		fmt.Fprintf(env.Stderr, "registered %s (%s, role %s, tenants %v) for client certificates with CN %q\n", p.ID, p.Name, p.Role, p.Tenants, *certCN)
		return nil
	}
	key, p, err := keys.Create(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "created %s (%s, role %s, tenants %v, actions %v); the key is shown once:\n", p.ID, p.Name, p.Role, p.Tenants, p.Actions)
	fmt.Fprintln(env.Stdout, key)
	return nil
}

// runKeysAdmin: keys list | keys revoke ID, on the store directly
// (--data-dir with the server stopped, or --nats-url); the same operations
// are available to admins over the API (GET /v1/keys, DELETE /v1/keys/{id}).
func runKeysAdmin(ctx context.Context, env Env, sub string, args []string) error {
	h := cmdHelp{Name: "keys list", Args: "[--data-dir D | --nats-url U] [--json]",
		About: "Lists every principal of the store: ID, name, role, tenants, actions, creation and expiry or state.", Example: "keys list --data-dir ./data"}
	var names []string
	if sub == "revoke" {
		h = cmdHelp{Name: "keys revoke", Args: "PRINCIPAL_ID [--data-dir D | --nats-url U]",
			About:   "Revokes a principal on the store: it never authenticates again (admins can do the same over the API: DELETE /v1/keys/{id}).",
			Example: "keys revoke key_0123456789abcdef --data-dir ./data"}
		names = []string{"PRINCIPAL_ID"}
	}
	var sc StoreConfig
	fs := newCommand(env, h)
	sc.register(fs.FlagSet)
	asJSON := new(bool)
	if sub == "list" {
		asJSON = fs.Bool("json", false, `print the principals as JSON ({"keys":[...]}, as GET /v1/keys answers) instead of a table`)
	}
	pos, err := fs.parse(args, names...)
	if err != nil {
		return err
	}
	var id string
	if sub == "revoke" {
		id = pos[0]
	}
	st, err := openExistingStore(ctx, sc, "exoarmur-keys")
	if err != nil {
		return err
	}
	defer st.Close()
	keys := auth.NewKeys(st.Principals, rand.Reader, time.Now)
	if sub == "list" {
		ps, err := keys.List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, map[string]any{"keys": ps})
		}
		tw := table(env)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tTENANTS\tACTIONS\tCREATED\tEXPIRES/STATE")
		for _, p := range ps {
			state := "no expiry"
			if !p.ExpiresAt.IsZero() {
				state = p.ExpiresAt.UTC().Format(time.RFC3339)
			}
			if p.PendingConsent {
				state = "PENDING CONSENT"
			}
			if p.Revoked {
				state = "REVOKED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(p.ID), cell(p.Name), cell(p.Role), cell(strings.Join(p.Tenants, ",")),
				cell(strings.Join(p.Actions, ",")), p.CreatedAt.UTC().Format(time.RFC3339), state)
		}
		return tw.Flush()
	}
	p, err := keys.Revoke(ctx, id)
	if err != nil {
		return fmt.Errorf("revoke %s: %w", id, err)
	}
	fmt.Fprintf(env.Stdout, "revoked %s (%s)\n", p.ID, p.Name)
	return nil
}

// runKeysConsent: keys consent PRINCIPAL_ID --reason R, over the API with
// the consenting admin's key (EXOARMUR_API_KEY): the consent is one
// person's decision, so it is never taken on the store directly.
func runKeysConsent(ctx context.Context, env Env, args []string) error {
	var af apiFlags
	fs := newCommand(env, cmdHelp{
		Name:    "keys consent",
		Args:    "PRINCIPAL_ID --reason R [--json]",
		About:   "An admin consents to a key that waits for a second admin's consent; it authenticates from then on (an admin's key in EXOARMUR_API_KEY; audited).",
		Example: `keys consent key_0123456789abcdef --reason "alice is on the on-call rota"`,
	})
	af.registerServer(fs.FlagSet)
	reason := fs.String("reason", "", "why this key may approve (required; audited)")
	asJSON := fs.Bool("json", false, `print the server's answer as JSON ({"consented":{principal}}) instead of a line`)
	pos, err := fs.parse(args, "PRINCIPAL_ID")
	if err != nil {
		return err
	}
	id := pos[0]
	if strings.TrimSpace(*reason) == "" {
		return fs.usageErr("--reason is required")
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	p, err := c.ConsentKey(ctx, id, *reason)
	if err != nil {
		return af.explain(err)
	}
	if *asJSON {
		return printJSON(env, map[string]any{"consented": p})
	}
	fmt.Fprintf(env.Stdout, "consented to %s (%s, role %s, tenants %s); it authenticates from now on\n", p.ID, p.Name, p.Role, strings.Join(p.Tenants, ","))
	return nil
}

// keysCreateThroughAPI creates req through the running server that holds
// the data dir (POST /v1/keys), as the admin whose key is in
// EXOARMUR_API_KEY: the server decides and audits it like any API call.
func keysCreateThroughAPI(ctx context.Context, env Env, af *apiFlags, sc StoreConfig, req auth.CreateRequest, expires time.Duration) error {
	if os.Getenv("EXOARMUR_API_KEY") == "" {
		return fmt.Errorf("%w: the data dir is in use by a running server; to create the key through its API, set EXOARMUR_API_KEY to an admin's key", errUsage)
	}
	// Only the server that holds this data dir: never another the
	// environment happens to name (the admin key and the new key would go
	// to the wrong deployment).
	holder, err := servingURL(sc.DataDir)
	if err != nil {
		return fmt.Errorf("the data dir %s is in use, but its server noted no API address (%v): stop it, or create the key through its API yourself (POST /v1/keys)", sc.DataDir, err)
	}
	named := af.server
	if named == "" {
		named = os.Getenv("EXOARMUR_SERVER")
	}
	if named != "" && strings.TrimRight(named, "/") != holder {
		return fmt.Errorf("%w: the data dir %s is held by the server at %s, not %s (from --server or EXOARMUR_SERVER): refusing to create the key elsewhere", errUsage, sc.DataDir, holder, named)
	}
	af.server = holder
	if req.Owner != "" && req.Owner != req.Name {
		return fmt.Errorf("%w: --owner: a key created through the API is owned by its name (the V1 key request has no owner); use --name %s, or create it on the store with the server stopped", errUsage, req.Owner)
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	created, err := c.CreateKey(ctx, client.KeyRequest{Name: req.Name, Role: req.Role, Tenants: req.Tenants, Actions: req.Actions, ExpiresIn: expires})
	if err != nil {
		return err
	}
	p := created.Principal
	state := ""
	if p.PendingConsent {
		state = "; it waits for a second admin's consent (keys consent " + p.ID + ") before it can be used"
	}
	fmt.Fprintf(env.Stderr, "created %s (%s, role %s, tenants %v, actions %v) through the server at %s (the data dir is in use)%s; the key is shown once:\n",
		p.ID, p.Name, p.Role, p.Tenants, p.Actions, c.BaseURL(), state)
	fmt.Fprintln(env.Stdout, created.Key)
	return nil
}
