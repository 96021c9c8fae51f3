package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// defaultServer is where the API commands look for `exoarmur serve`.
const defaultServer = "http://127.0.0.1:8080"

// apiTimeout bounds one API command.
const apiTimeout = 30 * time.Second

// apiFlags are the flags every API-client command shares.
type apiFlags struct {
	server string
	tenant string
}

func (a *apiFlags) register(fs interface {
	StringVar(p *string, name, value, usage string)
}, tenantUsage string) {
	a.registerServer(fs)
	fs.StringVar(&a.tenant, "tenant", "", tenantUsage)
}

// registerServer registers --server alone, for commands on no tenant.
func (a *apiFlags) registerServer(fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&a.server, "server", defaultServer, "ExoArmur server URL")
}

// requireTenant checks the required --tenant of a tenant command.
func (a *apiFlags) requireTenant() error {
	if _, err := tenant.Parse(a.tenant); err != nil {
		return fmt.Errorf("%w: --tenant: %v", errUsage, err)
	}
	return nil
}

func apiKey() (string, error) {
	key := os.Getenv("EXOARMUR_API_KEY")
	if key == "" {
		return "", fmt.Errorf("%w: EXOARMUR_API_KEY is not set", errUsage)
	}
	return key, nil
}

// client returns the API client of --server, authenticated with
// EXOARMUR_API_KEY, and the context bounding the command's call.
func (a *apiFlags) client(ctx context.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	key, err := apiKey()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(a.server, client.WithAPIKey(key), client.WithUserAgent("exoarmur-cli"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: --server: %v", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	return c, ctx, cancel, nil
}

// printJSON writes v as one line of JSON, as the server wrote it.
func printJSON(env Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
