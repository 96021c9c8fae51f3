package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
)

func runKeys(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("%w: expected: exoarmur keys create --name N --role R --tenant T [--tenant T2] --actions LIST", errUsage)
	}
	var sc StoreConfig
	var tenants, actions stringList
	fs := newFlagSet("keys create", env)
	sc.register(fs)
	name := fs.String("name", "", "principal name (required)")
	role := fs.String("role", "", "agent, operator or admin (required)")
	fs.Var(&tenants, "tenant", "tenant the key may act in (repeatable, required)")
	fs.Var(&actions, "actions", "action types (fs.read,...), classes (A0..A3) or * (required)")
	expires := fs.Duration("expires", 0, "key lifetime, e.g. 720h (default: no expiry)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	// Action names are case sensitive: stringList lowercased; classes are upper.
	for i, a := range actions {
		if len(a) == 2 && a[0] == 'a' {
			actions[i] = "A" + a[1:]
		}
	}
	req := auth.CreateRequest{Name: *name, Role: *role, Tenants: tenants, Actions: actions}
	if *expires < 0 {
		return fmt.Errorf("%w: --expires: must be positive", errUsage)
	}
	if *expires > 0 {
		req.ExpiresAt = time.Now().Add(*expires)
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	st, err := openStore(ctx, sc, "exoarmur-keys")
	if err != nil {
		return err
	}
	defer st.Close()
	key, p, err := auth.NewKeys(st.Principals, rand.Reader, time.Now).Create(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "created %s (%s, role %s, tenants %v, actions %v); the key is shown once:\n", p.ID, p.Name, p.Role, p.Tenants, p.Actions)
	fmt.Fprintln(env.Stdout, key)
	return nil
}
