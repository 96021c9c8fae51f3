package reality

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
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

type client struct {
	ctx    context.Context
	ep     Endpoints
	keys   Keys
	checks []Check
	http   *http.Client
}

type reply struct {
	code int
	body map[string]any
	raw  []byte
}

func (c *client) do(base, method, path, key string, body any) reply {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.ctx, method, base+path, rd)
	if err != nil {
		return reply{code: -1, raw: []byte(err.Error())}
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{code: -1, raw: []byte(err.Error())}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	r := reply{code: resp.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (c *client) check(gate string, pass bool, name string, format string, args ...any) bool {
	c.checks = append(c.checks, Check{Gate: gate, Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)})
	return pass
}

func (r reply) intentID() string {
	in, _ := r.body["intent"].(map[string]any)
	id, _ := in["id"].(string)
	return id
}

func (r reply) reasons() []string {
	e, _ := r.body["error"].(map[string]any)
	list, _ := e["reasons"].([]any)
	var out []string
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func (r reply) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (c *client) sinkCount() int {
	r := c.do(c.ep.Sink, "GET", "/count", "", nil)
	n, _ := r.body["count"].(float64)
	return int(n)
}

func (c *client) waitReady(base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if r := c.do(base, "GET", "/readyz", "", nil); r.code == 200 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 60s", base)
}

func joined(s []string) string { return strings.Join(s, ",") }
