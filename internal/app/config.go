package app

import (
	"errors"
	"flag"
	"fmt"
	"github.com/exoarmur/exoarmur/internal/policy"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/mcp"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// StoreConfig selects the durable store: an embedded NATS under DataDir, or
// an external NATS at NATSURL.
type StoreConfig struct {
	DataDir string
	NATSURL string
	Sync    string // "default" or "always"
	// Replicas of each stream and bucket on a NATS cluster (1, 3 or 5; 0
	// chooses: natsstore.Config.Replicas).
	Replicas int
}

func (c *StoreConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory of the embedded NATS JetStream store")
	fs.StringVar(&c.NATSURL, "nats-url", "", "connect to this external NATS instead of embedding one (e.g. nats://127.0.0.1:4222)")
	fs.IntVar(&c.Replicas, "nats-replicas", 0, "replicas of each stream and bucket on a NATS cluster: 1, 3 or 5 (default: 3 when --nats-url lists several servers and the cluster has at least 3, else 1); raises existing ones, never lowers them")
	fs.StringVar(&c.Sync, "sync", "default", `durability mode: "default" (written before ack, survives kill -9) or "always" (fsync every write)`)
}

// Validate names the offending flag.
func (c *StoreConfig) Validate() error {
	if c.NATSURL == "" && c.DataDir == "" {
		return errors.New("--data-dir: required unless --nats-url is set")
	}
	if c.Sync != "default" && c.Sync != "always" {
		return fmt.Errorf(`--sync %q: must be "default" or "always"`, c.Sync)
	}
	switch {
	case c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5:
		return fmt.Errorf("--nats-replicas %d: must be 1, 3 or 5", c.Replicas)
	case c.Replicas > 1 && c.NATSURL == "":
		return fmt.Errorf("--nats-replicas %d: needs --nats-url of a JetStream cluster; the embedded server is a single server", c.Replicas)
	}
	if c.NATSURL != "" && c.Sync == "always" {
		return errors.New("--sync always: applies to the embedded server only; configure sync on the external NATS")
	}
	return nil
}

// ServeConfig is the configuration of `exoarmur serve`.
type ServeConfig struct {
	Store      StoreConfig
	Listen     string
	SandboxDir string
	AllowHosts stringList
	Node       string
	LogFormat  string

	ApprovalTTL   time.Duration
	TenantTTL     map[string]time.Duration // per-tenant approval lifetime
	Webhooks      map[string]string        // tenant -> approval webhook URL
	WebhookSecret string
	ttlFlags      stringList
	hookFlags     stringList
	NoWorker      bool

	// ApprovalRulesFile declares who may approve each class and how many
	// approvals it needs (approval.ParseRules); ApprovalRules is what it
	// declares, or the built-in rules without a file.
	ApprovalRulesFile string
	ApprovalRules     *approval.Rules

	// ActionsFile declares the operator's own action types
	// (action.ParseFile); Actions is the registry: the built-ins and what
	// it declares, its secrets loaded (Validate).
	ActionsFile string
	Actions     *action.Registry

	// MCPConfigFile names the upstream MCP servers (mcp.ParseConfig);
	// MCP is it parsed, its secrets loaded (Validate). Their tools become
	// action types mcp.<server>.<tool> when serve connects to them.
	MCPConfigFile string
	MCP           *mcp.Config

	// Retention bounds the live store (gate.Config.Retention); 0 keeps
	// finished intents and their idempotency claims for good.
	Retention time.Duration

	// Lease and ExecTimeout: gate.Config.Lease and ExecTimeout.
	Lease       time.Duration
	ExecTimeout time.Duration

	TLSCert, TLSKey, ClientCA string

	// DebugAddr, when set, serves net/http/pprof on this loopback address
	// (no authentication: loopback only, for profiling).
	DebugAddr string

	// Checkpoints: the node's audit key and when it signs.
	Checkpoints CheckpointConfig
	// Limits are the rate limits and tenant quotas (limits.go).
	Limits LimitsConfig

	// PolicyDir holds the bundle the node decides under (policy.LoadDir);
	// Policy is that bundle, validated, or the default bundle without a
	// directory.
	PolicyDir string
	Policy    *policy.Bundle
	// ShadowPolicyDir holds a candidate bundle evaluated beside Policy on
	// every decision, never enforced (gate.Config.Shadow).
	ShadowPolicyDir string
	Shadow          *policy.Bundle
}

// validRetention: 0 (keep for good) or at least a second, the granularity
// of JetStream's per-message TTLs.
func validRetention(d time.Duration) bool { return d == 0 || d >= time.Second }

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, strings.ToLower(p))
		}
	}
	return nil
}

func (c *ServeConfig) register(fs *flag.FlagSet) {
	c.Store.register(fs)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP listen address (host:port)")
	fs.StringVar(&c.SandboxDir, "sandbox-dir", "", "root of the per-tenant fs sandboxes (default <data-dir>/sandbox)")
	fs.Var(&c.AllowHosts, "allow-host", "http host or host:port the http executors may reach (repeatable, comma separated)")
	fs.StringVar(&c.Node, "node", "node-1", "this node's name (recorded in idempotency claims)")
	fs.StringVar(&c.LogFormat, "log-format", "json", `log format: "json" or "text"`)
	fs.DurationVar(&c.ApprovalTTL, "approval-ttl", 15*time.Minute, "how long an approval request stays open")
	fs.Var(&c.ttlFlags, "approval-ttl-tenant", "per-tenant approval lifetime, TENANT=DURATION (repeatable)")
	fs.Var(&c.hookFlags, "webhook", "per-tenant approval webhook, TENANT=URL (repeatable); signed with --webhook-secret")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "HMAC-SHA256 secret for webhook signatures (or EXOARMUR_WEBHOOK_SECRET)")
	fs.StringVar(&c.ApprovalRulesFile, "approval-rules", "", "JSON file declaring, per class and tenant, how many distinct approvers an intent needs and which roles may approve (may raise the built-in rules, never lower them: A1 and A2 need one, A3 two); default the built-in rules")
	fs.StringVar(&c.MCPConfigFile, "mcp-config", "", "YAML or JSON file naming the upstream MCP servers (docs/MCP.md): each a stdio command or a Streamable HTTP url (headers with ${secret:NAME} from the environment), trusted or not, and a class A0..A3 per tool; their tools are served at /v1/tenants/{tenant}/mcp through the gate; default no MCP")
	fs.StringVar(&c.ActionsFile, "actions-file", "", "YAML or JSON file declaring your own action types (docs/ACTIONS.md): class, params schema, the HTTP request they send and the secrets (env or file) injected into its headers; checked at start; default the built-in types only")
	fs.BoolVar(&c.NoWorker, "no-worker", false, "do not run the background executor on this node")
	fs.DurationVar(&c.Retention, "retention", 0, "bound the live store: an intent and its approval expire this long after their last change, a finished execution's idempotency claim twice as long after it finished (a reused key then runs again); claims running or in doubt stay; the audit log keeps everything; at least --approval-ttl; 0 keeps all for good")
	fs.DurationVar(&c.Lease, "lease", gate.DefaultLease, "how long a running execution's claim is held between its node's renewals; a node that dies leaves its executions in doubt, on every node, this long after (at least 300ms)")
	fs.DurationVar(&c.ExecTimeout, "exec-timeout", gate.DefaultExecTimeout, "the deadline of every executor call; an executor that overruns it leaves its execution in doubt")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM); plain HTTP is then refused")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve Go profiles (net/http/pprof) on this loopback host:port; off by default")
	c.Checkpoints.register(fs)
	fs.StringVar(&c.ClientCA, "client-ca", "", "require client certificates signed by this CA (PEM): mutual TLS; the certificate's CN names the principal")
	c.Limits.register(fs)
	fs.StringVar(&c.ShadowPolicyDir, "shadow-policy-dir", "", "shadow mode: evaluate the bundle of this directory beside the active one on every decision without enforcing it; each difference is counted (exoarmur_policy_shadow_decisions_total), logged and recorded in the audit log (policy.shadow_differs); GET /v1/tenants/{t}/policy/shadow sums up")
	fs.StringVar(&c.PolicyDir, "policy-dir", "", "decide under the cedar bundle of this directory (exoarmur policy init|validate|test; docs/POLICIES.md), checked against the schema at start: a policy naming an attribute that does not exist refuses the start; default the built-in bundle")
}

// Validate checks every field and names the one that is wrong.
func (c *ServeConfig) Validate() error {
	if err := c.Store.Validate(); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || port == "" {
		return fmt.Errorf("--listen %q: must be host:port", c.Listen)
	}
	if c.Lease < 300*time.Millisecond {
		return fmt.Errorf("--lease %v: must be at least 300ms", c.Lease)
	}
	if c.ExecTimeout <= 0 {
		return fmt.Errorf("--exec-timeout %v: must be positive", c.ExecTimeout)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	c.ApprovalRules = approval.BuiltinRules()
	if c.ApprovalRulesFile != "" {
		data, err := os.ReadFile(c.ApprovalRulesFile)
		if err != nil {
			return fmt.Errorf("--approval-rules: %w", err)
		}
		if c.ApprovalRules, err = approval.ParseRules(data); err != nil {
			return fmt.Errorf("--approval-rules %s: %w", c.ApprovalRulesFile, err)
		}
	}
	// The declared actions, their secrets loaded: a missing one refuses
	// the start, by name (never its value).
	if c.Actions, err = action.LoadFile(c.ActionsFile, action.ParseOptions{Secrets: action.OSSecrets{}}); err != nil {
		return fmt.Errorf("--actions-file: %w", err)
	}
	if c.MCPConfigFile != "" {
		if c.MCP, err = mcp.LoadConfig(c.MCPConfigFile, mcp.ParseOptions{Secrets: action.OSSecrets{}}); err != nil {
			return fmt.Errorf("--mcp-config: %w", err)
		}
	}
	// The bundle, checked against the schema of those action types.
	c.Policy = policy.Default()
	if c.PolicyDir != "" {
		b, err := loadPolicyDir(c.PolicyDir, c.Actions)
		if err != nil {
			return fmt.Errorf("--policy-dir: %w", err)
		}
		c.Policy = b
	}
	if c.ShadowPolicyDir != "" {
		b, err := loadPolicyDir(c.ShadowPolicyDir, c.Actions)
		if err != nil {
			return fmt.Errorf("--shadow-policy-dir: %w", err)
		}
		c.Shadow = b
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key: give both or neither")
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return errors.New("--client-ca: needs --tls-cert and --tls-key")
	}
	if ip, err := netip.ParseAddr(host); c.TLSCert == "" && host != "localhost" && (err != nil || !ip.IsLoopback()) {
		// Plain HTTP credentials must not cross a network: without TLS, loopback only.
		return fmt.Errorf("--listen %q: without --tls-cert only loopback addresses are allowed", c.Listen)
	}
	if c.DebugAddr != "" {
		h, _, err := net.SplitHostPort(c.DebugAddr)
		if ip, perr := netip.ParseAddr(h); err != nil || perr != nil || !ip.IsLoopback() {
			return fmt.Errorf("--debug-addr %q: must be a loopback host:port such as 127.0.0.1:6060", c.DebugAddr)
		}
	}
	if c.SandboxDir == "" {
		if c.Store.DataDir == "" {
			return errors.New("--sandbox-dir: required with --nats-url")
		}
		c.SandboxDir = filepath.Join(c.Store.DataDir, "sandbox")
	}
	for _, h := range c.AllowHosts {
		if h == "" || strings.ContainsAny(h, "/ @*") {
			return fmt.Errorf("--allow-host %q: must be a host or host:port", h)
		}
	}
	if c.Node == "" {
		return errors.New("--node: required")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf(`--log-format %q: must be "json" or "text"`, c.LogFormat)
	}
	if !validRetention(c.Retention) {
		return fmt.Errorf("--retention %s: must be 0 (keep for good) or at least 1s", c.Retention)
	}
	if c.ApprovalTTL <= 0 {
		return fmt.Errorf("--approval-ttl %s: must be positive", c.ApprovalTTL)
	}
	c.TenantTTL = map[string]time.Duration{}
	for _, kv := range c.ttlFlags {
		tn, v, ok := strings.Cut(kv, "=")
		d, err := time.ParseDuration(v)
		if _, terr := tenant.Parse(tn); !ok || err != nil || d <= 0 || terr != nil {
			return fmt.Errorf("--approval-ttl-tenant %q: must be TENANT=DURATION", kv)
		}
		c.TenantTTL[tn] = d
	}
	if c.Retention != 0 {
		// An intent must not expire while its approval is still open.
		for _, name := range slices.Sorted(maps.Keys(c.TenantTTL)) {
			if d := c.TenantTTL[name]; d > c.Retention {
				return fmt.Errorf("--retention %s: shorter than --approval-ttl-tenant %s=%s: the intent would expire while its approval is open", c.Retention, name, d)
			}
		}
		if c.ApprovalTTL > c.Retention {
			return fmt.Errorf("--retention %s: shorter than --approval-ttl %s: an intent would expire while its approval is open", c.Retention, c.ApprovalTTL)
		}
	}
	c.Webhooks = map[string]string{}
	for _, kv := range c.hookFlags {
		tn, u, ok := strings.Cut(kv, "=")
		pu, err := url.Parse(u)
		if _, terr := tenant.Parse(tn); !ok || terr != nil || err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("--webhook %q: must be TENANT=http(s)://host/path", kv)
		}
		c.Webhooks[tn] = u
	}
	if c.WebhookSecret == "" {
		c.WebhookSecret = os.Getenv("EXOARMUR_WEBHOOK_SECRET")
	}
	if len(c.Webhooks) > 0 && c.WebhookSecret == "" {
		return errors.New("--webhook-secret: required with --webhook")
	}
	return c.Checkpoints.Validate(c.Store.DataDir)
}

// stringArgs is a repeatable flag of values kept as given (paths).
type stringArgs []string

func (s *stringArgs) String() string { return strings.Join(*s, ",") }
func (s *stringArgs) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*s = append(*s, v)
	return nil
}
