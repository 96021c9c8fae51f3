package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
)

var initHelp = cmdHelp{
	Name: "init",
	Args: "[--data-dir D | --nats-url U] [--tenant T ...] [--name N] [--owner O]",
	About: "Creates the store and its first credential: an admin key with the system grant (the global kill switch, " +
		"every tenant's keys) and the tenants named, printed once on stdout, with the next steps on stderr. " +
		"It refuses a store that already has credentials (use keys create).",
	Example: "init --data-dir ./data --tenant acme > admin.key",
}

// runInit creates a store's first admin credential.
func runInit(ctx context.Context, env Env, args []string) error {
	var sc StoreConfig
	var tenants stringList
	fs := newCommand(env, initHelp)
	sc.register(fs.FlagSet)
	fs.Var(&tenants, "tenant", "a tenant the first admin also holds, to act and approve in it (repeatable)")
	name := fs.String("name", "admin", "the first admin's name")
	owner := fs.String("owner", "", "the person the key is for (default: --name)")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	req := auth.CreateRequest{Name: *name, Role: auth.RoleAdmin, Tenants: append([]string{auth.SystemGrant}, tenants...), Actions: []string{"*"},
		Owner: *owner, CreatedBy: "init"}
	if err := req.Validate(); err != nil {
		return fs.usageErr("%v", err)
	}
	st, err := openStore(ctx, sc, "exoarmur-init", nil)
	if err != nil {
		return err
	}
	defer st.Close()
	keys := auth.NewKeys(st.Principals, rand.Reader, time.Now)
	existing, err := keys.List(ctx)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return fmt.Errorf("the store already has %d credentials: init creates the first one only; create more with keys create (or keys list to see them)", len(existing))
	}
	key, p, err := keys.Create(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, key)
	where := "--data-dir " + sc.DataDir
	if sc.NATSURL != "" {
		where = "--nats-url " + sc.NATSURL
	}
	fmt.Fprintf(env.Stderr, `created the first admin %s (%s, tenants %v); its key is on stdout, shown once: keep it safe.
Next:
  exoarmur serve %s                                  # the API on 127.0.0.1:8080
  export EXOARMUR_API_KEY=<the key>
  exoarmur keys create --name bot --role agent --tenant T --actions '*'    # through the running server
  exoarmur killswitch disengage --reason "go live"                       # both switches start engaged
  exoarmur killswitch disengage --tenant T --reason "go live"
`, p.ID, p.Name, p.Tenants, where)
	return nil
}
