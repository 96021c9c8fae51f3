package reality

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	apiclient "github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// Check is one verifiable claim of the scenario.
type Check struct {
	Gate   string `json:"gate"`
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Keys are the scenario's principals (created by the orchestrator).
type Keys struct {
	Admin    string `json:"admin"`
	AcmeBot  string `json:"acme_bot"`
	AcmeOp   string `json:"acme_op"`
	AcmeOp2  string `json:"acme_op2"`
	BetaBot  string `json:"beta_bot"`
	BetaOp   string `json:"beta_op"`
	AcmeRead string `json:"acme_reader"`
}

// Endpoints are where the stack listens (loopback only).
type Endpoints struct {
	NodeA, NodeB, Sink, NATS string
}

// DefaultEndpoints are the fixed loopback ports of docker-compose.yml.
var DefaultEndpoints = Endpoints{
	NodeA: "http://127.0.0.1:18081", NodeB: "http://127.0.0.1:18082",
	Sink: "http://127.0.0.1:18099", NATS: "nats://127.0.0.1:14222",
}

// client runs the scenario: the typed API client of each node (no key;
// node.With adds the principal's), the checks so far, and a plain HTTP
// client for the sink's /count, which is not part of the API.
type client struct {
	ctx    context.Context
	ep     Endpoints
	keys   Keys
	checks []Check
	http   *http.Client
	a, b   *apiclient.Client // node A and node B
}

func newClient(ctx context.Context, ep Endpoints, keys Keys) (*client, error) {
	c := &client{ctx: ctx, ep: ep, keys: keys, http: &http.Client{Timeout: 30 * time.Second}}
	var err error
	if c.a, err = apiclient.New(ep.NodeA, apiclient.WithHTTPClient(c.http), apiclient.WithUserAgent("exoarmur-reality")); err != nil {
		return nil, err
	}
	if c.b, err = apiclient.New(ep.NodeB, apiclient.WithHTTPClient(c.http), apiclient.WithUserAgent("exoarmur-reality")); err != nil {
		return nil, err
	}
	return c, nil
}

// as is node's client authenticating with key ("" sends no credentials).
func as(node *apiclient.Client, key string) *apiclient.Client {
	return node.With(apiclient.WithAPIKey(key))
}

// reply is the outcome of one API call as the checks read it: the HTTP
// status (the call's success status, the refusal's, or -1 when no answer
// came) and the refusal's error code and reasons.
type reply struct {
	code int
	err  *apiclient.Error
}

// answer makes the reply of a call that returned err; ok is the status
// the call's success stands for.
func answer(err error, ok int) reply {
	if err == nil {
		return reply{code: ok}
	}
	var e *apiclient.Error
	if errors.As(err, &e) {
		return reply{code: e.Status, err: e}
	}
	return reply{code: -1}
}

// status is the success status of the calls answering 201 when they
// created something and 200 otherwise (propose), or 200 when the change
// was confirmed and 202 when not (kill switches).
func status(yes bool, ifYes, ifNot int) int {
	if yes {
		return ifYes
	}
	return ifNot
}

func (r reply) reasons() []string {
	if r.err == nil {
		return nil
	}
	return r.err.Reasons
}

func (r reply) errCode() string {
	if r.err == nil {
		return ""
	}
	return r.err.Code
}

func (c *client) check(gate string, pass bool, name string, format string, args ...any) bool {
	c.checks = append(c.checks, Check{Gate: gate, Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)})
	return pass
}

// propose submits an intent on node as key and returns its ID.
func (c *client) propose(node *apiclient.Client, key, t string, req contract.IntentRequest) (string, reply) {
	v, created, err := as(node, key).Propose(c.ctx, t, req)
	return v.Intent.ID, answer(err, status(created, http.StatusCreated, http.StatusOK))
}

// execute asks node's gate to run an intent as key.
func (c *client) execute(node *apiclient.Client, key, t, id string) (bool, reply) {
	out, err := as(node, key).Execute(c.ctx, t, id)
	return out.Duplicate, answer(err, http.StatusOK)
}

// approve votes on an intent's approval on node as key.
func (c *client) approve(node *apiclient.Client, key, t, id, decision, reason string) reply {
	_, err := as(node, key).DecideApproval(c.ctx, t, id, contract.ApprovalDecision{Decision: decision, Reason: reason})
	return answer(err, http.StatusOK)
}

// setSwitch flips the global switch (t == "") or a tenant's on node as key.
func (c *client) setSwitch(node *apiclient.Client, key, t string, engaged bool, reason string) reply {
	_, confirmed, err := as(node, key).SetKillSwitch(c.ctx, t, contract.KillSwitchRequest{Engaged: engaged, Reason: reason})
	return answer(err, status(confirmed, http.StatusOK, http.StatusAccepted))
}

// auditPage reads a page of a tenant's audit chain on node as key.
func (c *client) auditPage(node *apiclient.Client, key, t string, limit int) reply {
	_, err := as(node, key).AuditPage(c.ctx, t, 0, limit)
	return answer(err, http.StatusOK)
}

// export reads a tenant's whole audit chain on node as key.
func (c *client) export(node *apiclient.Client, key, t string) ([]byte, reply) {
	var buf bytes.Buffer
	_, err := as(node, key).AuditExport(c.ctx, t, &buf)
	if err != nil {
		return nil, answer(err, http.StatusOK)
	}
	return buf.Bytes(), answer(nil, http.StatusOK)
}

// sinkCount is the sink's count of side effects (GET /count, plain HTTP).
func (c *client) sinkCount() int {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.ep.Sink+"/count", nil)
	if err != nil {
		return 0
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Count int `json:"count"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = json.Unmarshal(raw, &body)
	return body.Count
}

func (c *client) waitReady(node *apiclient.Client) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if err := node.Ready(c.ctx); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 60s", node.BaseURL())
}

func joined(s []string) string { return strings.Join(s, ",") }
