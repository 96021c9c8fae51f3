package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// runKillSwitch talks to a running server: kill switches are changed
// through the API, so the change is authenticated, audited and propagated
// exactly like any other operator action.
func runKillSwitch(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || (args[0] != "engage" && args[0] != "disengage" && args[0] != "status") {
		return fmt.Errorf("%w: expected: exoarmur killswitch engage|disengage|status [--tenant T] [--reason R] (key in EXOARMUR_API_KEY)", errUsage)
	}
	sub := args[0]
	fs := newFlagSet("killswitch "+sub, env)
	server := fs.String("server", "http://127.0.0.1:8080", "ExoArmur server URL")
	tname := fs.String("tenant", "", "tenant switch to change (default: the global switch)")
	reason := fs.String("reason", "", "why (required for engage and disengage; audited)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	key, err := apiKey()
	if err != nil {
		return err
	}
	path := "/v1/killswitch"
	if *tname != "" {
		t, err := tenant.Parse(*tname)
		if err != nil {
			return fmt.Errorf("%w: --tenant: %v", errUsage, err)
		}
		path = "/v1/tenants/" + t.String() + "/killswitch"
	}
	method, body := http.MethodGet, []byte(nil)
	if sub != "status" {
		if strings.TrimSpace(*reason) == "" {
			return fmt.Errorf("%w: --reason is required", errUsage)
		}
		method = http.MethodPut
		body, _ = json.Marshal(map[string]any{"engaged": sub == "engage", "reason": *reason})
	}
	status, out, err := apiCall(ctx, method, strings.TrimSuffix(*server, "/")+path, key, body)
	return printResult(env, status, out, err)
}

// apiCall makes one authenticated JSON request to the server.
func apiCall(ctx context.Context, method, url, key string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: read: %w", method, url, err)
	}
	return resp.StatusCode, out, nil
}
