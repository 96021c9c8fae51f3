package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/executor"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/mcp"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/active"
	"github.com/exoarmur/exoarmur/internal/policy/archive"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// runtime is a wired ExoArmur node.
type runtime struct {
	store     *natsstore.Store
	switches  *killswitch.Switches
	approvals *approval.Store
	audit     *audit.Log
	keys      *auth.Keys
	access    *access.Service
	gate      *gate.Gate
	execs     *executor.Registry
	actions   *action.Registry // the built-ins, the declared actions and the MCP tools
	// upstreams are the MCP servers' connections, mcp the front end of
	// their tools (nil without --mcp-config).
	upstreams *mcp.Supervisor
	mcp       *mcp.Frontend
	bundles   func(context.Context) (replay.Bundles, error)
	// policy is the node's configured bundle: what a tenant decides and is
	// authorized under while no bundle is activated for it or globally.
	policy *policy.Bundle
	// policies is which bundle each tenant is under (activations).
	policies *active.Set
	// checkpoints signs the chains' heads; Run is serve's to start.
	checkpoints *checkpoint.Checkpointer
}

// storedBundles is what a replay of st trusts: the bundles this binary
// shipped and every bundle archived in the store that verifies. warn (if
// not nil) is told each archived entry left out (archive.ErrCorrupt,
// naming its key): the decisions recorded under it do not verify.
func storedBundles(st *natsstore.Store, warn func(error)) func(context.Context) (replay.Bundles, error) {
	a := archive.New(st.Policies)
	return func(ctx context.Context) (replay.Bundles, error) {
		lib, err := a.Library(ctx, policy.Builtin())
		if err != nil {
			return nil, err
		}
		if warn != nil {
			for _, bad := range lib.Corrupt() {
				warn(bad)
			}
		}
		return lib, nil
	}
}

// warnCorrupt tells env's stderr of an archived entry left out.
func warnCorrupt(env Env) func(error) {
	return func(err error) {
		fmt.Fprintf(env.Stderr, "warning: %v: left out of the replay library; the decisions recorded under it do not verify\n", err)
	}
}

// deps are the injected sources of time and randomness.
type deps struct {
	now    func() time.Time
	rand   io.Reader
	logger *slog.Logger
	wrap   func(gate.Executors) gate.Executors // demo: count executor calls
}

func prodDeps(logger *slog.Logger) deps {
	return deps{now: time.Now, rand: rand.Reader, logger: logger}
}

func openStore(ctx context.Context, c StoreConfig, name string, logger *slog.Logger) (*natsstore.Store, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return natsstore.Open(ctx, natsstore.Config{DataDir: c.DataDir, NATSURL: c.NATSURL, SyncAlways: c.Sync == "always", Replicas: c.Replicas, Name: name, Logger: logger})
}

// openExistingStore opens the store c names for a command that only reads
// it (audit verify and export, replay of the live store, keys list; keys
// revoke, which needs the key to exist). When there is none it fails with
// "no store at DIR" (exit 1) and creates nothing: natsstore.Open would
// create the data dir and every stream, so natsstore.CheckExists looks
// first, at the JetStream directory layout under the data dir or, with
// --nats-url, at the server's streams. An existing store is then opened as
// usual (Open's stream and bucket checks change nothing on a store of this
// version).
func openExistingStore(ctx context.Context, c StoreConfig, name string) (*natsstore.Store, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	err := natsstore.CheckExists(ctx, natsstore.Config{DataDir: c.DataDir, NATSURL: c.NATSURL, Name: name}, storeCheckTimeout)
	if errors.Is(err, natsstore.ErrNoStore) {
		return nil, fmt.Errorf("%w; nothing was created: give the data dir `exoarmur serve` uses (--data-dir, with the server stopped) or its NATS (--nats-url)", err)
	}
	if err != nil {
		return nil, err
	}
	return openStore(ctx, c, name, nil)
}

// storeCheckTimeout bounds a connection that only checks an external NATS.
const storeCheckTimeout = 3 * time.Second

func openRuntime(ctx context.Context, c ServeConfig, d deps) (*runtime, error) {
	st, err := openStore(ctx, c.Store, "exoarmur-"+c.Node, d.logger)
	if err != nil {
		return nil, err
	}
	// One registry of action types for the gate (propose, decide), the
	// executors and the access layer.
	actions := c.Actions
	if actions == nil {
		actions = action.Builtin()
	}
	// The MCP upstreams: connected (each within mcp.ConnectTimeout) and
	// their tools listed before the registry is made, so each tool is an
	// action type of it.
	var sup *mcp.Supervisor
	var tools []mcp.Tool
	var caller executor.MCPCaller
	if c.MCP != nil {
		sup = mcp.Start(ctx, c.MCP, mcp.SupervisorOptions{Logger: d.logger})
		tools = mcp.Registrations(sup, d.logger)
		regs := actions.List()
		for _, t := range tools {
			regs = append(regs, t.Registration)
		}
		if actions, err = action.New(regs...); err != nil {
			sup.Close()
			st.Close()
			return nil, fmt.Errorf("mcp tools: %w", err)
		}
		caller = sup
	}
	// No record may exceed the store's max_payload: the outputs and the
	// intents are bounded by what it leaves (gate.RecordBudget).
	maxRecord := st.MaxPayload()
	execs, err := executor.New(executor.Config{Actions: actions, SandboxDir: c.SandboxDir, Allowlist: c.AllowHosts, MaxOutputBytes: gate.RecordBudget(maxRecord), MCP: caller})
	if err != nil {
		sup.Close()
		st.Close()
		return nil, fmt.Errorf("executors: %w", err)
	}
	var ex gate.Executors = execs
	if d.wrap != nil {
		ex = d.wrap(ex)
	}
	// Archive the bundle this node decides under before any decision, so
	// every decision's policy_hash can be replayed from the store.
	bundle := c.Policy
	if bundle == nil {
		bundle = policy.Default()
	}
	if err := archiveBundles(ctx, st, bundle, c.Shadow); err != nil {
		st.Close()
		return nil, fmt.Errorf("archive the policy bundle: %w", err)
	}
	log := audit.New(st.Audit)
	if c.Store.Sync == "always" {
		log.EnableGroupCommit() // with fsync on every write, sharing one pays off
	}
	cps, err := openCheckpoints(c, d, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	// The active bundles per tenant: the node's bundle under every
	// activation, the pointers applied by the switches' watcher.
	validator, err := policy.NewValidator(actions.PolicyTypes())
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("policy schema: %w", err)
	}
	policies, err := active.New(active.Config{Base: bundle, Validator: validator, Archive: archive.New(st.Policies), Control: st.Control, Audit: log, Now: d.now, Logger: d.logger})
	if err != nil {
		st.Close()
		return nil, err
	}
	sw, err := killswitch.Start(ctx, killswitch.Config{Control: st.Control, Peers: st.Bus, Audit: log, Now: d.now, Node: c.Node, Logger: d.logger, Others: policies})
	if err != nil {
		st.Close()
		return nil, err
	}
	policies.Attach(sw)
	var notifier approval.Notifier
	if len(c.Webhooks) > 0 {
		notifier = &approval.Webhook{URLs: c.Webhooks, Secret: []byte(c.WebhookSecret), Logger: d.logger}
	}
	ttl := c.ApprovalTTL
	if ttl <= 0 {
		ttl = approval.DefaultTTL
	}
	approvals := approval.NewStore(st.Approvals, log, func(t tenant.ID) time.Duration {
		if d, ok := c.TenantTTL[t.String()]; ok {
			return d
		}
		return ttl
	}, notifier)
	approvals.SetRetention(c.Retention)
	rules := c.ApprovalRules
	if rules == nil {
		rules = approval.BuiltinRules()
	}
	approvals.SetRules(rules)
	keys := auth.NewKeys(st.Principals, d.rand, d.now)
	keys.SetActions(actions) // a key may be granted a declared action by name
	g, err := gate.New(gate.Config{
		Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Actions: actions, Executors: ex, Switches: sw, Approvals: approvals, Work: st.Work,
		Allowlist: c.AllowHosts, Now: d.now, Node: c.Node, Logger: d.logger, Retention: c.Retention, Lease: c.Lease, ExecTimeout: c.ExecTimeout, Principals: keys,
		MaxRecord: maxRecord, Chain: cps.Diverged, Policies: policies, Shadow: c.Shadow, Quotas: c.Limits.Quotas, PendingApprovals: approvals.PendingCount,
	})
	if err != nil {
		sw.Stop()
		st.Close()
		return nil, err
	}
	acc, err := access.New(access.Config{Policies: policies, Keys: keys, Certs: keys, KeyAdmin: keys, Audit: log, Now: d.now, Logger: d.logger, Actions: actions, Consent: rules, Rates: &c.Limits.Rates})
	if err != nil {
		sw.Stop()
		st.Close()
		return nil, err
	}
	acc.Start() // the aggregated audit of failed authentication, every minute
	if err := cps.Start(ctx); err != nil {
		_ = acc.Close(ctx)
		sw.Stop()
		st.Close()
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	var front *mcp.Frontend
	if sup != nil {
		front = &mcp.Frontend{Gate: g, Access: acc, Approvals: approvals, Tools: tools, NewID: func() string { return randomHex(d.rand, 16) }, Logger: d.logger}
	}
	return &runtime{upstreams: sup, mcp: front, policy: bundle, policies: policies, checkpoints: cps, store: st, switches: sw, approvals: approvals, audit: log, keys: keys, access: acc, gate: g, execs: execs, actions: actions, bundles: storedBundles(st, func(err error) {
		if d.logger != nil {
			d.logger.Warn("policy archive: entry left out of the replay library; the decisions recorded under it do not verify", "err", err)
		}
	})}, nil
}

// archiveBundles stores the bundles (nil ones skipped) in the store's
// archive, by hash.
func archiveBundles(ctx context.Context, st *natsstore.Store, bs ...*policy.Bundle) error {
	a := archive.New(st.Policies)
	for _, b := range bs {
		if b == nil {
			continue
		}
		if err := a.Put(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// openCheckpoints loads (or creates) the node's audit key and returns the
// checkpointer of log, told of every append.
func openCheckpoints(c ServeConfig, d deps, st *natsstore.Store, log *audit.Log) (*checkpoint.Checkpointer, error) {
	path := c.Checkpoints.KeyFile
	if path == "" && c.Store.DataDir != "" {
		path = filepath.Join(c.Store.DataDir, "audit-key.json")
	}
	if path == "" {
		return nil, errors.New("audit key: no key file (--audit-key) and no data dir to keep one in")
	}
	keys, created, err := checkpoint.LoadOrCreate(path, d.rand, d.now())
	if err != nil {
		return nil, err
	}
	if created && d.logger != nil {
		d.logger.Info("audit key created: back it up, and give its public key to whoever verifies exports (exoarmur audit pubkey)", "key_file", path, "key_id", keys.Signer().ID)
	}
	var witness checkpoint.Witness
	if c.Checkpoints.Witness != "" {
		if witness, err = checkpoint.ParseWitness(c.Checkpoints.Witness, c.Store.DataDir); err != nil {
			return nil, err
		}
	}
	cps := checkpoint.New(checkpoint.Config{Audit: log, Keys: keys, Store: checkpoint.NewStore(st.Checkpoints), Witness: witness, Trust: c.Checkpoints.trust,
		Every: c.Checkpoints.Every, Interval: c.Checkpoints.Interval, Now: d.now, Node: c.Node, Logger: d.logger})
	log.OnAppend(cps.Appended)
	return cps, nil
}

func (r *runtime) Close() {
	// Before the store closes: the failures of the last interval are
	// written, then the chains this node wrote are signed.
	_ = r.access.Close(context.Background())
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r.checkpoints.Flush(fctx)
	cancel()
	r.switches.Stop()
	r.execs.Close()
	r.upstreams.Close()
	r.store.Close()
}

// randomHex returns n random bytes from r, hex-encoded.
func randomHex(r io.Reader, n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		_, _ = rand.Read(b)
	}
	return hex.EncodeToString(b)
}

// randomID returns a request ID from crypto/rand.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "req_" + hex.EncodeToString(b[:])
}
