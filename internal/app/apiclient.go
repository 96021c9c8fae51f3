package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// defaultServer is where the API commands look for `exoarmur serve`
// unless --server or EXOARMUR_SERVER says otherwise.
const defaultServer = "http://127.0.0.1:8080"

// serverEnv names the server of every API command; --server wins.
const serverEnv = "EXOARMUR_SERVER"

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
	fs.StringVar(&a.server, "server", "", "ExoArmur server URL (default $"+serverEnv+", else "+defaultServer+")")
}

// serverURL is the server to call and where that came from: --server,
// else EXOARMUR_SERVER ("--server" or "EXOARMUR_SERVER"), else the
// default ("").
func (a *apiFlags) serverURL() (url, from string) {
	if a.server != "" {
		return a.server, "--server"
	}
	if v := os.Getenv(serverEnv); v != "" {
		return v, serverEnv
	}
	return defaultServer, ""
}

// requireTenant checks the required --tenant of a tenant command.
func (a *apiFlags) requireTenant() error {
	if _, err := tenant.Parse(a.tenant); err != nil {
		return fmt.Errorf("%w: --tenant: %v", errUsage, err)
	}
	return nil
}

// optionalTenant checks --tenant of a command where it is optional
// (absent: the global scope).
func (a *apiFlags) optionalTenant() error {
	if a.tenant == "" {
		return nil
	}
	return a.requireTenant()
}

// propagationText says which live nodes applied a control change.
func propagationText(p killswitch.Propagation) string {
	nodes := fmt.Sprintf("applied by %d live node(s)", len(p.Confirmed))
	if len(p.Confirmed) > 0 {
		nodes += " (" + cell(strings.Join(p.Confirmed, ", ")) + ")"
	}
	if len(p.Unconfirmed) > 0 {
		nodes += "; NOT confirmed by " + cell(strings.Join(p.Unconfirmed, ", "))
	}
	return nodes
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
	url, from := a.serverURL()
	c, err := client.New(url, client.WithAPIKey(key), client.WithUserAgent("exoarmur-cli"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s: %v", errUsage, from, err)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	return c, ctx, cancel, nil
}

// explain turns an error of the API client that never reached the server
// (client.ErrUnreachable) into one naming the server tried, where that
// came from and both ways to point the command elsewhere; other errors
// pass unchanged.
func (a *apiFlags) explain(err error) error {
	if !errors.Is(err, client.ErrUnreachable) {
		return err
	}
	url, from := a.serverURL()
	if from == "" {
		from = "the default: neither --server nor " + serverEnv + " is set"
	} else {
		from = "given by " + from
	}
	cause := err
	var op *net.OpError
	if errors.As(err, &op) {
		cause = op
	}
	return fmt.Errorf("cannot reach the ExoArmur server at %s (%s): %w\n  is `exoarmur serve` running there? point the command elsewhere with --server URL or %s=URL",
		url, from, cause, serverEnv)
}

// printJSON writes v as one line of JSON, as the server wrote it.
func printJSON(env Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
