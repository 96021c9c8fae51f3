// Store (this file) is ExoArmur's connection to NATS JetStream: by default an
// embedded server with file storage under the data dir, connected in-process
// (no listening socket), or an external NATS (--nats-url) for multi-node
// deployments. It ensures the streams and KV buckets whose names are
// defined in internal/tenant (declare.go: each used as it is when it has
// the settings ExoArmur relies on, created or updated otherwise), hands the
// domain's buckets out through the store adapter (Bucket), and can also run
// the standalone server of `exoarmur nats`.
//
// Durability: JetStream file storage writes each message to its block file
// before acknowledging it (flush in place for R1 streams), so an acknowledged
// record survives kill -9 of the process. Sync "always" additionally fsyncs
// every write, which also covers power loss, at a throughput cost.

package natsstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// ErrUnavailable wraps any failure to reach the store; callers map it to 503.
var ErrUnavailable = errors.New("store unavailable")

// ErrMaxPayload is Open's refusal of a NATS server whose max_payload is
// below MinMaxPayload.
var ErrMaxPayload = errors.New("the NATS server's max_payload is too small for ExoArmur")

// MinMaxPayload is the smallest max_payload (the largest message a NATS
// server accepts, headers included) ExoArmur runs on: 256 KiB. Every
// record the gate writes is bounded by the max_payload it is given
// (gate.Config.MaxRecord): its variable part (an intent with its decision
// input, an execution's output) gets the max_payload less a 64 KiB
// reserve for the rest of the record (gate.RecordReserve). At 256 KiB
// that leaves 192 KiB: every intent without large params (a target of
// 2,048 characters and a justification of 4,096 take at most 37 KiB
// however they escape) and reads of a useful size. A stock nats-server
// (1 MiB) and the servers this binary runs (DefaultMaxPayload) are above it.
const MinMaxPayload = 256 << 10

// Config selects and tunes the store.
type Config struct {
	// DataDir holds the embedded server's JetStream files (ignored with NATSURL).
	DataDir string
	// NATSURL connects to an external NATS instead of embedding one.
	NATSURL string
	// SyncAlways fsyncs every JetStream write (embedded server only).
	SyncAlways bool
	// Replicas asks for this many replicas of every stream and bucket (1, 3
	// or 5; more than 1 only on a JetStream cluster). 0 chooses (Replicas):
	// 3 when NATSURL lists several servers and the connection knows of at
	// least 3, 1 otherwise. Open never lowers an existing stream's
	// replicas: an asked number raises a stream that has fewer, and the
	// chosen number applies to the streams Open creates only.
	Replicas int
	// Name is the NATS client name (shows in server monitoring).
	Name string
	// Logger receives the embedded server's warnings and errors (a full
	// disk, a store that cannot write); nil discards them.
	Logger *slog.Logger
}

// Store is an open JetStream connection with ExoArmur's streams and buckets.
type Store struct {
	NC *nats.Conn
	JS jetstream.JetStream

	// The domain's buckets, as the store adapter presents them
	// (internal/natsstore: each a kv.Bucket): the gate's intents and
	// idempotency ledger, the key registry, the kill switches' control
	// bucket (also their killswitch.Bucket), the approvals.
	Intents     *Bucket
	Idempotency *Bucket
	Principals  *Bucket
	Control     *Bucket
	Approvals   *Bucket
	Policies    *Bucket // policy bundles by hash, write-once (internal/policy/archive)
	Checkpoints *Bucket // signed audit checkpoints and their public keys, write-once (internal/checkpoint)
	Health      jetstream.KeyValue
	// Bus is core NATS publish/subscribe on the connection (the kill
	// switches' killswitch.Peers).
	Bus *Bus
	// Audit is the audit stream as the store adapter presents it
	// (Stream, for audit.New).
	Audit *Stream
	// Work is the work queue of approved intents (Queue, the gate's
	// gate.WorkQueue).
	Work *Queue

	srv *Server // embedded server, nil with an external URL

	// Store health, probed in the background by a write: the connection
	// and JetStream's API stay up while a stream whose disk is full or
	// unwritable stops acknowledging writes.
	lastHealthy atomic.Int64 // unix nanos of the last answered probe
	// writeFailed is set when the embedded server reports a critical
	// write error: that stream acknowledges nothing until a restart.
	writeFailed atomic.Bool
	connected   atomic.Bool // maintained by the connection's handlers
	// disconnectedAt is when the connection was last lost (unix nanos):
	// a replicated store reconnects to another server and stays ready
	// meanwhile (Ready).
	disconnectedAt atomic.Int64
	closed         atomic.Bool
	stopProbe      context.CancelFunc
	probeDone      chan struct{}

	// replicas is what Open asked of each stream's replicas (declare).
	replicas replicas
	// healthWindow is how long Ready waits for an unanswered probe:
	// healthWindow, or retryWindow when the health bucket is replicated.
	healthWindow time.Duration

	// violation, while declare creates or updates a stream, is told the
	// subject of each permissions violation on the connection.
	violation atomic.Pointer[func(subject string)]

	maxPayload atomic.Int64 // the server's max_payload, read when Open connected
}

// MaxPayload is the largest message the server accepts (its max_payload,
// read at Open, at least MinMaxPayload): no record may be larger, and the
// gate's limits derive from it (gate.Config.MaxRecord).
func (s *Store) MaxPayload() int64 { return s.maxPayload.Load() }

// Health probe timing: a probe every healthEvery; the store reads as not
// ready once no probe was answered for healthWindow, or, on a replicated
// store, for retryWindow: there an unanswered probe may only mean the
// health bucket's leader died and its servers are electing another (4-9
// s), while every other stream still answers, and requests ride the
// election out (retry.go) rather than being refused at once.
const (
	healthEvery  = 500 * time.Millisecond
	healthWindow = 2 * time.Second
)

func (s *Store) probe(ctx context.Context) {
	defer close(s.probeDone)
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, healthWindow/2)
		now := time.Now()
		if _, err := s.Health.Put(pctx, tenant.HealthKey, now.AppendFormat(nil, time.RFC3339Nano)); err == nil {
			s.lastHealthy.Store(now.UnixNano())
		}
		cancel()
	}
}

// Open starts (or connects to) NATS and ensures every stream and bucket. A
// node whose NATS user is confined (User) cannot create or update them: on
// a store no unconfined node or NATS admin user prepared, or one whose
// settings differ from ExoArmur's, Open fails with ErrNotPrepared naming
// the stream.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{}
	opts := []nats.Option{
		nats.Name(cmpOr(cfg.Name, "exoarmur")),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// No buffering while disconnected: a write fails at once (503)
		// instead of landing later, after the caller was told it failed.
		nats.ReconnectBufSize(-1),
		// Connection state for Ready without taking the connection's lock
		// on every request.
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			s.disconnectedAt.Store(time.Now().UnixNano())
			s.connected.Store(false)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.connected.Store(true)
			// The limits were derived from the first server's max_payload;
			// a cluster member configured with less refuses the largest
			// records.
			if mp, want := nc.MaxPayload(), s.maxPayload.Load(); mp < want && cfg.Logger != nil {
				cfg.Logger.Error("reconnected to a NATS server with a smaller max_payload than the one this node's limits were derived from; records near the limit will be refused: give every cluster member the same max_payload", "max_payload", mp, "derived_from", want)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { s.closed.Store(true); s.connected.Store(false) }),
		nats.ErrorHandler(s.asyncError),
	}
	if cfg.NATSURL == "" {
		srv, err := StartServer(ServerConfig{DataDir: cfg.DataDir, SyncAlways: cfg.SyncAlways, DontListen: true, Logger: cfg.Logger,
			OnCriticalWrite: func(msg string) {
				if s.writeFailed.CompareAndSwap(false, true) && cfg.Logger != nil {
					cfg.Logger.Error("the store can no longer persist writes: every write is refused (503) and /readyz is not ready; free or repair the data dir's disk, then restart", "cause", msg)
				}
			}})
		if err != nil {
			return nil, err
		}
		s.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
	}
	url := cfg.NATSURL
	if url == "" {
		url = nats.DefaultURL // ignored: the in-process provider is used
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		s.shutdownServer()
		return nil, fmt.Errorf("connect nats: %w: %w", ErrUnavailable, err)
	}
	s.NC = nc
	mp := nc.MaxPayload()
	if mp < MinMaxPayload {
		at := nc.ConnectedUrlRedacted()
		s.Close()
		return nil, fmt.Errorf("%w: the server at %s accepts messages of at most %d bytes; ExoArmur needs at least %d (%d KiB), and a stock nats-server's default of 1 MiB is enough: set max_payload to 1MB or more in the nats-server configuration (e.g. `max_payload: 1MB`), or leave it unset", ErrMaxPayload, at, mp, MinMaxPayload, MinMaxPayload>>10)
	}
	s.maxPayload.Store(mp)
	s.Bus = NewBus(nc)
	s.connected.Store(nc.IsConnected())
	js, err := jetstream.New(nc)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s.JS = js
	if s.replicas, err = chooseReplicas(cfg, nc); err != nil {
		s.Close()
		return nil, err
	}
	if !s.replicas.asked && s.replicas.n > 1 && cfg.Logger != nil {
		cfg.Logger.Info("several NATS servers: streams and buckets created now get 3 replicas; existing ones keep theirs (--nats-replicas chooses, and raises existing ones)",
			"servers_known", len(knownServers(nc)), "replicas", s.replicas.n)
	}
	if err := s.ensure(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.lastHealthy.Store(time.Now().UnixNano()) // ensure just talked to JetStream
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopProbe, s.probeDone = cancel, make(chan struct{})
	go s.probe(pctx)
	return s, nil
}

// ensure declares every stream and bucket (declare.go): each is used as
// it is when it has the settings ExoArmur relies on, and created or
// updated otherwise, which only an unconfined node may do.
func (s *Store) ensure(ctx context.Context) error {
	replicas := s.replicas.n
	auditStream, err := s.declare(ctx, auditConfig(replicas), nil)
	if err != nil {
		return err
	}
	s.Audit = NewStream(auditStream, s.JS)
	for _, b := range []struct {
		into    **Bucket
		name    string
		desc    string
		history int64
		ttl     bool
	}{
		{&s.Intents, tenant.IntentsBucket, "ExoArmur intents and their state", 8, true},
		{&s.Idempotency, tenant.IdempotencyBucket, "ExoArmur idempotency ledger (create-only claims)", 8, true},
		{&s.Principals, tenant.PrincipalsBucket, "ExoArmur API key registry (hashes only)", 4, false},
		{&s.Control, tenant.ControlBucket, "ExoArmur kill switches (global and per tenant)", 16, false},
		{&s.Approvals, tenant.ApprovalsBucket, "ExoArmur approvals, one record per intent", 16, true},
	} {
		kv, err := s.declareKV(ctx, b.name, kvConfig(b.name, b.desc, b.history, b.ttl, replicas), nil)
		if err != nil {
			return err
		}
		*b.into = New(kv, s.JS)
	}
	policies, err := s.declareKV(ctx, tenant.PoliciesBucket, policiesConfig(replicas), dropMarkers)
	if err != nil {
		return err
	}
	s.Policies = New(policies, s.JS)
	checkpoints, err := s.declareKV(ctx, tenant.CheckpointsBucket, checkpointsConfig(replicas), nil)
	if err != nil {
		return err
	}
	cstream, err := s.JS.Stream(ctx, tenant.KVStream(tenant.CheckpointsBucket))
	if err != nil {
		return fmt.Errorf("bind stream %s: %w", tenant.KVStream(tenant.CheckpointsBucket), err)
	}
	s.Checkpoints = New(checkpoints, s.JS).WithStream(tenant.CheckpointsBucket, cstream)
	if s.Health, err = s.declareKV(ctx, tenant.HealthBucket, kvConfig(tenant.HealthBucket, "ExoArmur store write probe (a timestamp, no tenant data)", 1, false, replicas), nil); err != nil {
		return err
	}
	s.healthWindow = healthWindow
	if st, err := s.Health.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().Config.Replicas > 1 {
			s.healthWindow = retryWindow
		}
	}
	work, err := s.declare(ctx, workConfig(replicas), nil)
	if err != nil {
		return err
	}
	s.Work = NewQueue(work, s.JS)
	return nil
}

// Close drains the connection and stops an embedded server.
func (s *Store) Close() error {
	if s.stopProbe != nil {
		s.stopProbe()
		<-s.probeDone
		s.stopProbe = nil
	}
	if s.NC != nil {
		s.NC.Close()
	}
	s.shutdownServer()
	return nil
}

func (s *Store) shutdownServer() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv = nil
	}
}

// Ready reports whether the store is usable: connected (on a replicated
// store: or reconnecting for less than retryWindow), a probe write was
// acknowledged within the last healthWindow (retryWindow on a replicated
// store), and (embedded server) no
// stream reported a critical write error.
func (s *Store) Ready() bool {
	if s.writeFailed.Load() || s.closed.Load() || time.Since(time.Unix(0, s.lastHealthy.Load())) >= s.healthWindow {
		return false
	}
	// Disconnected: not ready at once on a single server; on a replicated
	// store (healthWindow is retryWindow) only once reconnecting to
	// another server took longer than requests wait (retry.go).
	return s.connected.Load() || s.healthWindow > healthWindow && time.Since(time.Unix(0, s.disconnectedAt.Load())) < s.healthWindow
}

// ServerConfig configures a NATS+JetStream server run from this binary.
type ServerConfig struct {
	DataDir    string
	Host       string // listen host (default 127.0.0.1)
	Port       int    // listen port (0 picks a random port; -1 disables)
	DontListen bool   // in-process only
	SyncAlways bool
	Debug      bool
	// Logger receives the server's warnings and errors (nil: none, unless
	// Debug, which logs everything to stderr).
	Logger *slog.Logger
	// OnCriticalWrite is called when a stream reports a critical write
	// error (disk full, read-only, I/O error): from then on that stream
	// acknowledges no write until the server restarts.
	OnCriticalWrite func(msg string)
	// Users, when set, require every client to authenticate; each node
	// user is confined at the broker to its tenants (defence in depth).
	Users []User
	// Name is the server's name, unique in a cluster (default "exoarmur").
	Name string
	// Cluster, when its Port is set, makes the server a member of a
	// JetStream cluster: it listens for routes on Host:Port and connects
	// to Routes (the other members' route URLs).
	Cluster Cluster
	// MaxPayload is the largest message the server accepts, headers
	// included (default DefaultMaxPayload). Tests set a small one to stand
	// in for an external server's.
	MaxPayload int32
}

// DefaultMaxPayload is the max_payload of the servers this binary runs
// (the embedded one and `exoarmur nats`): 8 MiB, eight times a stock
// nats-server's.
const DefaultMaxPayload = 8 << 20

// Cluster is a server's place in a JetStream cluster.
type Cluster struct {
	Name   string   // the cluster's name, the same on every member (default "exoarmur")
	Host   string   // route listen host (default 127.0.0.1)
	Port   int      // route listen port; 0: not clustered
	Routes []string // nats-route://host:port of the other members
}

// User is a NATS login. Admin users are unrestricted (for operators and the
// keys CLI); node users may publish only to their tenants' subjects and keys
// (tenant.NodePublishAllow) and may not administer streams
// (tenant.NodePublishDeny: no stream create, update, delete or purge), so a
// node user opens (Open) only a store an admin user or an unconfined node
// has declared.
type User struct {
	Name     string   `json:"user"`
	Password string   `json:"password"`
	Admin    bool     `json:"admin,omitempty"`
	Global   bool     `json:"global,omitempty"` // may change the global kill switch
	Tenants  []string `json:"tenants,omitempty"`
}

func natsUsers(users []User) ([]*server.User, error) {
	var out []*server.User
	for _, u := range users {
		if u.Name == "" || u.Password == "" {
			return nil, errors.New("nats users: user and password are required")
		}
		su := &server.User{Username: u.Name, Password: u.Password}
		if !u.Admin {
			var ids []tenant.ID
			for _, t := range u.Tenants {
				id, err := tenant.Parse(t)
				if err != nil {
					return nil, fmt.Errorf("nats user %s: %w", u.Name, err)
				}
				ids = append(ids, id)
			}
			su.Permissions = &server.Permissions{Publish: &server.SubjectPermission{
				Allow: tenant.NodePublishAllow(ids, u.Global), Deny: tenant.NodePublishDeny(),
			}}
		}
		out = append(out, su)
	}
	return out, nil
}

// Server is a running NATS+JetStream server that holds its data dir lock.
type Server struct {
	*server.Server
	lock *os.File
}

// Shutdown stops the server, waits for it, and releases the data dir lock.
func (s *Server) Shutdown() {
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// StartServer starts a NATS server with JetStream file storage under DataDir
// and waits until it accepts connections. It locks DataDir first.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("nats server: data dir is required")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("nats server: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("nats server: create data dir: %w", err)
	}
	lock, err := lockDataDir(dir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: cmpOr(cfg.Name, "exoarmur"),
		JetStream:  true,
		StoreDir:   dir,
		DontListen: cfg.DontListen,
		Host:       cmpOr(cfg.Host, "127.0.0.1"),
		Port:       cfg.Port,
		NoSigs:     true,
		NoLog:      !cfg.Debug,
		SyncAlways: cfg.SyncAlways,
		MaxPayload: cmp.Or(cfg.MaxPayload, DefaultMaxPayload),
	}
	if cfg.Port == 0 && !cfg.DontListen {
		opts.Port = server.RANDOM_PORT
	}
	if cfg.Cluster.Port != 0 {
		if cfg.DontListen {
			lock.Close()
			return nil, errors.New("nats server: a cluster member must listen")
		}
		opts.Cluster = server.ClusterOpts{Name: cmpOr(cfg.Cluster.Name, "exoarmur"), Host: cmpOr(cfg.Cluster.Host, "127.0.0.1"), Port: cfg.Cluster.Port}
		for _, r := range cfg.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				lock.Close()
				return nil, fmt.Errorf("nats server: route %q: want nats-route://host:port", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if len(cfg.Users) > 0 {
		if opts.Users, err = natsUsers(cfg.Users); err != nil {
			lock.Close()
			return nil, err
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if cfg.Debug {
		srv.ConfigureLogger()
	} else if cfg.Logger != nil || cfg.OnCriticalWrite != nil {
		srv.SetLoggerV2(natsLogger{l: cfg.Logger, onCritical: cfg.OnCriticalWrite}, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		lock.Close()
		return nil, fmt.Errorf("nats server: not ready after 30s (data dir %s)", dir)
	}
	return &Server{Server: srv, lock: lock}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// natsLogger passes the embedded server's warnings and errors to slog
// (notices are startup chatter; debug and trace are off) and reports
// critical write errors, which the server only logs.
type natsLogger struct {
	l          *slog.Logger
	onCritical func(string)
}

func (n natsLogger) Noticef(string, ...any) {}
func (n natsLogger) Debugf(string, ...any)  {}
func (n natsLogger) Tracef(string, ...any)  {}
func (n natsLogger) Warnf(format string, v ...any) {
	if n.l != nil {
		n.l.Warn("nats server: " + fmt.Sprintf(format, v...))
	}
}
func (n natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if n.l != nil {
		n.l.Error("nats server: " + msg)
	}
	if n.onCritical != nil && strings.Contains(msg, "critical write error") {
		n.onCritical(msg)
	}
}
func (n natsLogger) Fatalf(format string, v ...any) { n.Errorf("(fatal) "+format, v...) }
