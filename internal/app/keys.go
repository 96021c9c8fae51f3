package app

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
)

func runKeys(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: expected: exoarmur keys create|list|revoke|consent", errUsage)
	}
	switch args[0] {
	case "create":
	case "list", "revoke":
		return runKeysAdmin(ctx, env, args)
	case "consent":
		return runKeysConsent(ctx, env, args[1:])
	default:
		return fmt.Errorf("%w: expected: exoarmur keys create|list|revoke|consent", errUsage)
	}
	return KeysCreate(ctx, env, args[1:], KeysHooks{})
}

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
	fs := newFlagSet("keys create", env)
	sc.register(fs)
	name := fs.String("name", "", "principal name (required)")
	role := fs.String("role", "", "agent, operator or admin (required)")
	fs.Var(&tenants, "tenant", "tenant the key may act in (repeatable, required); \"system\" grants the global powers (global kill switch, every tenant's keys, metrics) to an admin")
	fs.Var(&actions, "actions", "action types (fs.read,...), classes (A0..A3) or * (required)")
	expires := fs.Duration("expires", 0, "key lifetime, e.g. 720h (default: no expiry)")
	owner := fs.String("owner", "", "the person the key is for (default: --name); four eyes counts distinct owners, so give one person's keys one owner")
	certCN := fs.String("cert-cn", "", "register a client-certificate principal with this subject CN instead of an API key (mutual TLS)")
	if h.Flags != nil {
		h.Flags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
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
		return fmt.Errorf("%w: --expires: must be positive", errUsage)
	}
	if *expires > 0 {
		req.ExpiresAt = time.Now().Add(*expires)
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
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
	if err != nil {
		return err
	}
	defer st.Close()
	keys := auth.NewKeys(st.Principals, src, now)
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
func runKeysAdmin(ctx context.Context, env Env, args []string) error {
	sub := args[0]
	rest := args[1:]
	var id string
	if sub == "revoke" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return fmt.Errorf("%w: expected: exoarmur keys revoke PRINCIPAL_ID", errUsage)
		}
		id, rest = rest[0], rest[1:]
	}
	var sc StoreConfig
	fs := newFlagSet("keys "+sub, env)
	sc.register(fs)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	st, err := openStore(ctx, sc, "exoarmur-keys", nil)
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
		fmt.Fprintf(env.Stdout, "%-22s %-16s %-8s %-20s %-24s %-20s %s\n", "ID", "NAME", "ROLE", "TENANTS", "ACTIONS", "CREATED", "EXPIRES/STATE")
		for _, p := range ps {
			state := "no expiry"
			if !p.ExpiresAt.IsZero() {
				state = p.ExpiresAt.Format(time.RFC3339)
			}
			if p.PendingConsent {
				state = "PENDING CONSENT"
			}
			if p.Revoked {
				state = "REVOKED"
			}
			fmt.Fprintf(env.Stdout, "%-22s %-16s %-8s %-20s %-24s %-20s %s\n", p.ID, p.Name, p.Role, strings.Join(p.Tenants, ","),
				strings.Join(p.Actions, ","), p.CreatedAt.Format(time.RFC3339), state)
		}
		return nil
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
	const usage = "expected: exoarmur keys consent PRINCIPAL_ID --reason R [--server URL] (an admin's key in EXOARMUR_API_KEY)"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	id := args[0]
	var af apiFlags
	fs := newFlagSet("keys consent", env)
	af.registerServer(fs)
	reason := fs.String("reason", "", "why this key may approve (required; audited)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	c, ctx, cancel, err := af.client(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	p, err := c.ConsentKey(ctx, id, *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "consented to %s (%s, role %s, tenants %s); it authenticates from now on\n", p.ID, p.Name, p.Role, strings.Join(p.Tenants, ","))
	return nil
}
