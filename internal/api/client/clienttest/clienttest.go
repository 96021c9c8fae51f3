// Package clienttest serves the real ExoArmur API handler (internal/api)
// under httptest for tests of the client and of the commands that use it:
// an embedded NATS store in a temporary directory, the real gate, audit
// log, kill switches, approval store and access layer. The executor and the
// key registry (in memory, with internal/auth's answers) are stand-ins.
package clienttest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// HangTarget is the target on which the stand-in executor blocks, ignoring
// its deadline, until the test ends: its execution ends in doubt.
const HangTarget = "hang.txt"

// Principals of the fixture (Server.Keys holds their keys).
const (
	Agent     = "agent"      // agent of acme, every action
	Reader    = "reader"     // agent of acme, A0 only
	Operator  = "operator"   // operator of acme, every action
	Operator2 = "operator2"  // a second operator of acme (another owner)
	Admin     = "admin"      // admin of acme and the system grant
	BetaAgent = "beta-agent" // agent of beta
)

// Server is a running API.
type Server struct {
	URL  string
	Keys map[string]string // principal name -> API key
	IDs  map[string]string // principal name -> principal ID
	// Runs counts executor runs.
	Runs atomic.Int64
	Log  *audit.Log
}

// Start serves the API until the test ends. Every kill switch starts
// disengaged.
func Start(t testing.TB) *Server {
	t.Helper()
	ctx := context.Background()
	st, err := natsstore.Open(ctx, natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	sw, err := killswitch.Start(ctx, killswitch.Config{Control: st.Control, Peers: st.Bus, Audit: log, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Stop)
	for _, scope := range []tenant.ID{tenant.System, tenant.MustParse("acme"), tenant.MustParse("beta")} {
		if _, err := sw.Set(ctx, scope, killswitch.Flip{Engaged: false, Reason: "test setup", Actor: "key_setup", RequestID: ""}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Keys: map[string]string{}, IDs: map[string]string{}, Log: log}
	release := make(chan struct{})
	ex := &executor{s: s, release: release}
	approvals := approval.NewStore(st.Approvals, log, nil, nil)
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Executors: ex, Switches: sw,
		Approvals: approvals, Work: st.Work, Node: "test", Lease: 300 * time.Millisecond, ExecTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	keys := &keyTable{byKey: map[string]*auth.Principal{}}
	for _, p := range []struct {
		name, role      string
		tenants, action []string
	}{
		{Agent, auth.RoleAgent, []string{"acme"}, []string{"*"}},
		{Reader, auth.RoleAgent, []string{"acme"}, []string{"A0"}},
		{Operator, auth.RoleOperator, []string{"acme"}, []string{"*"}},
		{Operator2, auth.RoleOperator, []string{"acme"}, []string{"*"}},
		{Admin, auth.RoleAdmin, []string{"acme", auth.SystemGrant}, []string{"*"}},
		{BetaAgent, auth.RoleAgent, []string{"beta"}, []string{"*"}},
	} {
		key, pr, err := keys.Create(ctx, auth.CreateRequest{Name: p.name, Role: p.role, Tenants: p.tenants, Actions: p.action, CreatedBy: "cli"})
		if err != nil {
			t.Fatal(err)
		}
		s.Keys[p.name], s.IDs[p.name] = key, pr.ID
	}
	acc, err := access.New(access.Config{Keys: keys, KeyAdmin: keys, Audit: log, FailLimit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	h := api.New(api.Config{Gate: g, Switches: sw, Approvals: approvals, Access: acc, Audit: log, Ready: st.Ready,
		RequestID: func() string { return "req_" + strconv.FormatInt(n.Add(1), 10) }})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// Runs first (cleanups are last in, first out): a hung executor lets
	// go before the server and the store close.
	t.Cleanup(func() { close(release) })
	s.URL = srv.URL
	return s
}

// keyTable is an in-memory key registry with auth.Keys' answers (the
// registry itself is tested in internal/auth): unknown and revoked keys are
// auth.ErrUnauthenticated, expired ones auth.ErrExpired.
type keyTable struct {
	mu    sync.Mutex
	n     int
	byKey map[string]*auth.Principal
	order []string // keys in creation order
}

func (k *keyTable) Authenticate(_ context.Context, key string) (*auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.byKey[key]
	switch {
	case !ok || p.Revoked:
		return nil, auth.ErrUnauthenticated
	case p.PendingConsent:
		return nil, auth.ErrPendingConsent
	case !p.ExpiresAt.IsZero() && !time.Now().Before(p.ExpiresAt):
		return nil, auth.ErrExpired
	}
	c := *p
	return &c, nil
}

func (k *keyTable) Create(_ context.Context, req auth.CreateRequest) (string, auth.Principal, error) {
	if err := req.Validate(); err != nil {
		return "", auth.Principal{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	id := fmt.Sprintf("%016x", k.n)
	owner := req.Owner
	if owner == "" {
		owner = req.Name
	}
	p := &auth.Principal{ID: "key_" + id, Name: req.Name, Role: req.Role, Tenants: slices.Sorted(slices.Values(req.Tenants)),
		Actions: slices.Sorted(slices.Values(req.Actions)), CreatedAt: time.Now().UTC(), ExpiresAt: req.ExpiresAt, Owner: owner, CreatedBy: req.CreatedBy, PendingConsent: req.PendingConsent}
	key := auth.KeyPrefix + id + "_secret"
	k.byKey[key] = p
	k.order = append(k.order, key)
	return key, *p, nil
}

func (k *keyTable) List(context.Context) ([]auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []auth.Principal
	for _, key := range k.order {
		out = append(out, *k.byKey[key])
	}
	return out, nil
}

func (k *keyTable) find(id string) (*auth.Principal, error) {
	for _, p := range k.byKey {
		if p.ID == id {
			return p, nil
		}
	}
	return nil, auth.ErrUnauthenticated
}

func (k *keyTable) Lookup(_ context.Context, id string) (auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, err := k.find(id)
	if err != nil {
		return auth.Principal{}, err
	}
	return *p, nil
}

func (k *keyTable) Revoke(_ context.Context, id string) (auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, err := k.find(id)
	if err != nil {
		return auth.Principal{}, err
	}
	p.Revoked = true
	return *p, nil
}

func (k *keyTable) Consent(_ context.Context, id, by string) (auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, err := k.find(id)
	switch {
	case err != nil || p.Revoked:
		return auth.Principal{}, auth.ErrUnauthenticated
	case !p.PendingConsent:
		return auth.Principal{}, auth.ErrNotPending
	}
	p.PendingConsent, p.ConsentedBy = false, by
	return *p, nil
}

type executor struct {
	s       *Server
	release chan struct{}
}

func (e *executor) Lookup(string) (gate.Executor, bool) { return e, true }

func (e *executor) Run(_ context.Context, p *gate.Permit) (map[string]string, error) {
	e.s.Runs.Add(1)
	if p.Intent().Target == HangTarget {
		<-e.release
	}
	return map[string]string{"target": p.Intent().Target}, nil
}
