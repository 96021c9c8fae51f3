// Declarations (this file): the configuration of every stream and bucket
// ExoArmur uses, and how Open ensures it. Each is looked up first and used
// as it is when it has the settings ExoArmur relies on (differs); only a
// stream that is missing or differs is created or updated. A node whose
// NATS user is confined at the broker (exoarmur nats --users) may not
// create or update streams (tenant.NodePublishDeny), so it starts only on
// a store an unconfined node or the NATS admin user prepared, and fails
// with ErrNotPrepared, naming the stream, on any other.

package natsstore

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// ErrNotPrepared: a stream or bucket is missing or lacks a setting ExoArmur
// relies on, and this node's NATS user may not create or update streams.
var ErrNotPrepared = errors.New("store not prepared")

// auditConfig is the audit stream: every tenant's chain, records never
// removed (no limits that discard old records, no age, no per-subject
// limit, no delete or purge, no message TTL).
func auditConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        tenant.AuditStream,
		Description: "ExoArmur per-tenant hash-chained audit log",
		Subjects:    []string{tenant.AuditSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Replicas:    replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		// Group commit writes a chain's records as one atomic batch
		// (audit.Log.EnableGroupCommit).
		AllowAtomicPublish: true,
		Duplicates:         30 * time.Second, // message-ID dedupe of publish retries; bounds the IDs kept in memory
	}
}

// workConfig is the work queue of approved intents.
func workConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        tenant.WorkStream,
		Description: "ExoArmur background executor work queue (approved intents to execute)",
		Subjects:    []string{tenant.WorkSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Replicas:    replicas,
		Duplicates:  10 * time.Minute,
	}
}

// kvConfig is the stream behind bucket name with history values per key,
// as the KV API declares it (jetstream.KeyValueConfig with a description,
// history, file storage and replicas; nats.go prepareKeyValueConfig), so
// that the stream binds as a bucket (jetstream.JetStream.KeyValue) and a
// bucket the KV API created earlier already conforms. withTTL also allows
// per-message TTLs, which a retention (gate.Config.Retention) puts on
// intents, claims and approvals: the KV API enables them only together
// with subject delete markers, which we do not want (one more write per
// expiry). The server refuses to turn AllowMsgTTL off again.
func kvConfig(name, desc string, history int64, withTTL bool, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              tenant.KVStream(name),
		Description:       desc,
		Subjects:          []string{tenant.KVSubject(name, ">")},
		MaxMsgsPerSubject: history,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		AllowDirect:       replicas == 1, // consistentReads
		Discard:           jetstream.DiscardNew,
		AllowMsgTTL:       withTTL,
	}
}

// policiesConfig is the policy archive (internal/policy/archive): a KV
// bucket whose keys are written once, enforced by the server for every
// client: one message per key with discard new per subject (an overwrite
// and a delete marker, each a second message on the key's subject, are
// refused), no rollup (a purge marker, or a rollup that would drop the
// bucket, is refused), no message delete, no stream purge.
func policiesConfig(replicas int) jetstream.StreamConfig {
	c := kvConfig(tenant.PoliciesBucket, "ExoArmur policy bundles by hash (cedar source; no tenant data; write-once)", 1, false, replicas)
	c.DiscardNewPerSubject = true
	c.AllowRollup = false
	c.DenyPurge = true
	return c
}

// checkpointsConfig is the checkpoints bucket (internal/checkpoint),
// write-once as the policy archive is: a stored checkpoint or announced
// key is never overwritten, deleted or rolled up by any client.
func checkpointsConfig(replicas int) jetstream.StreamConfig {
	c := kvConfig(tenant.CheckpointsBucket, "ExoArmur audit checkpoints and the public keys that signed them (write-once)", 1, false, replicas)
	c.DiscardNewPerSubject = true
	c.AllowRollup = false
	c.DenyPurge = true
	return c
}

// differs names the first setting of have that is not want's, as
// "field is X, want Y", or "" when have has every setting ExoArmur relies
// on. Each is compared exactly with what Open declares (what an
// unconfined node sets): the subjects (a record or key lands only where
// the naming puts it); storage and persist mode (an acknowledged write is
// on disk); retention, discard, discard new per subject, the per-subject
// limit (a KV bucket's history), max msgs, max bytes and max age (which
// decide when the server drops old messages or refuses new ones: the audit
// chain and the archive are never thinned, a KV history is what the
// domain reads); deny delete, deny purge and allow rollup (who may remove
// messages: rollups are how a KV write drops its key's history, and on the
// archive they are off); allow msg TTL and subject delete marker TTL
// (which messages may expire); allow atomic (the audit group commit);
// allow batched, message counters and schedules (other write semantics,
// off; a schedule publishes to a subject the broker did not check);
// the duplicate window (a publish retried within it is stored once:
// audit appends, enqueues by intent ID); sealed; and no mirror, sources or
// subject transform (the stream's only input is a publish to its
// subjects); and the replicas, which declare sets to what the stream has
// unless asked for more (replicas.of), so they differ only to be raised;
// and direct get, which only a single replica may answer
// (consistentReads). Not compared, as the operator's to choose:
// description, placement, compression, max message size, max consumers,
// republish and metadata.
func differs(have, want jetstream.StreamConfig) string {
	unlimited := func(n int64) int64 {
		if n <= 0 {
			return -1 // 0 and -1 both mean no limit
		}
		return n
	}
	type setting struct {
		name       string
		have, want any
	}
	for _, s := range []setting{
		{"subjects", strings.Join(have.Subjects, ","), strings.Join(want.Subjects, ",")},
		{"storage", have.Storage, want.Storage},
		{"persist_mode", have.PersistMode, want.PersistMode},
		{"retention", have.Retention, want.Retention},
		{"discard", have.Discard, want.Discard},
		{"discard_new_per_subject", have.DiscardNewPerSubject, want.DiscardNewPerSubject},
		{"max_msgs_per_subject", unlimited(have.MaxMsgsPerSubject), unlimited(want.MaxMsgsPerSubject)},
		{"max_msgs", unlimited(have.MaxMsgs), unlimited(want.MaxMsgs)},
		{"max_bytes", unlimited(have.MaxBytes), unlimited(want.MaxBytes)},
		{"max_age", have.MaxAge, want.MaxAge},
		{"deny_delete", have.DenyDelete, want.DenyDelete},
		{"deny_purge", have.DenyPurge, want.DenyPurge},
		{"allow_rollup_hdrs", have.AllowRollup, want.AllowRollup},
		{"allow_msg_ttl", have.AllowMsgTTL, want.AllowMsgTTL},
		{"subject_delete_marker_ttl", have.SubjectDeleteMarkerTTL, want.SubjectDeleteMarkerTTL},
		{"allow_atomic", have.AllowAtomicPublish, want.AllowAtomicPublish},
		{"allow_batched", have.AllowBatchPublish, want.AllowBatchPublish},
		{"allow_msg_counter", have.AllowMsgCounter, want.AllowMsgCounter},
		{"allow_msg_schedules", have.AllowMsgSchedules, want.AllowMsgSchedules},
		{"duplicate_window", have.Duplicates, want.Duplicates},
		{"sealed", have.Sealed, want.Sealed},
		{"replicas", have.Replicas, want.Replicas},
		{"allow_direct", have.AllowDirect, want.AllowDirect},
		{"mirror", have.Mirror != nil, want.Mirror != nil},
		{"sources", len(have.Sources), len(want.Sources)},
		{"subject_transform", have.SubjectTransform != nil, want.SubjectTransform != nil},
	} {
		if s.have != s.want {
			return fmt.Sprintf("%s is %v, want %v", s.name, s.have, s.want)
		}
	}
	return ""
}

// declare returns stream want.Name, after creating or updating it if it
// is missing or differs from want (differs). upgrade, if not nil, runs on
// an existing stream before it is updated. A node that may not create or
// update streams gets ErrNotPrepared naming the stream and why; the broker
// refuses such a request without a reply, only with a permissions
// violation on the connection, which ends the request at once
// (Store.violation).
func (s *Store) declare(ctx context.Context, want jetstream.StreamConfig, upgrade func(context.Context, jetstream.Stream) error) (jetstream.Stream, error) {
	st, err := s.JS.Stream(ctx, want.Name)
	var why string
	switch {
	case err == nil:
		have := st.CachedInfo().Config
		want.Replicas = s.replicas.of(have.Replicas)
		consistentReads(&want)
		if why = differs(have, want); why == "" {
			return st, nil
		}
		why = "its configuration differs from what ExoArmur declares (" + why + ")"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		why = "it is missing"
	default:
		return nil, fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The API subjects of this stream's administration end in its name.
	refused := jetstream.DefaultAPIPrefix + "STREAM."
	s.watchViolations(func(subject string) {
		if strings.HasPrefix(subject, refused) && strings.HasSuffix(subject, "."+want.Name) {
			cancel(fmt.Errorf("%w: the broker refused %s", errRefused, subject))
		}
	})
	defer s.watchViolations(nil)
	if st != nil && upgrade != nil {
		if err := upgrade(dctx, st); err != nil {
			return nil, s.notPrepared(dctx, want.Name, why, fmt.Errorf("upgrade stream %s: %w", want.Name, err))
		}
	}
	st, err = s.JS.CreateOrUpdateStream(dctx, want)
	if err != nil {
		return nil, s.notPrepared(dctx, want.Name, why, fmt.Errorf("ensure stream %s: %w", want.Name, unplaced(err, want.Replicas)))
	}
	return st, nil
}

// consistentReads sets a bucket's direct get (reads answered by any
// server holding the stream, not only its leader) to what its replicas
// allow: a read that follows a write must see it (a 201 is never
// followed by a 404 on any node), and a replica that is not the leader
// may not have applied the write yet. At R1 the only server holding the
// stream answers, so direct get stays on there (cheaper than the leader's
// JetStream API: docs/PERFORMANCE.md); at R3 and R5 it is off, and every
// read goes to the stream's leader ($JS.API.STREAM.MSG.GET), which
// acknowledged the write only once it had applied it. A node that bound a
// bucket before another raised its replicas still asks for direct gets,
// which nobody answers any more: its reads fail (503) until it restarts,
// never read stale. The audit stream and the work queue have no direct
// get: their reads go to the leader already.
func consistentReads(want *jetstream.StreamConfig) {
	if strings.HasPrefix(want.Name, tenant.KVStream("")) {
		want.AllowDirect = want.Replicas == 1
	}
}

// replicas is what Open asks of each stream's replicas: n for a stream it
// creates; an existing stream keeps its replicas unless asked raises them
// to n. Open never lowers them (an operator who scaled a stream up keeps
// it scaled, whatever a later command was given).
type replicas struct {
	n     int
	asked bool // n was given (Config.Replicas), not chosen
}

// of is the replicas a stream that has have (0: missing) is declared with.
func (r replicas) of(have int) int {
	switch {
	case have <= 0:
		return r.n
	case r.asked:
		return max(have, r.n)
	default:
		return have
	}
}

// chooseReplicas is what cfg asks of the replicas, or, when it names
// none, 3 for a URL list of several servers on a connection that knows of
// at least 3 (the ones listed and those the servers announced), 1
// otherwise.
func chooseReplicas(cfg Config, nc *nats.Conn) (replicas, error) {
	switch cfg.Replicas {
	case 1, 3, 5:
		if cfg.Replicas > 1 && cfg.NATSURL == "" {
			return replicas{}, fmt.Errorf("replicas %d: the embedded server is a single server; replicas above 1 need a JetStream cluster (--nats-url)", cfg.Replicas)
		}
		return replicas{n: cfg.Replicas, asked: true}, nil
	case 0:
		if strings.Contains(cfg.NATSURL, ",") && len(knownServers(nc)) >= 3 {
			return replicas{n: 3}, nil
		}
		return replicas{n: 1}, nil
	default:
		return replicas{}, fmt.Errorf("replicas %d: want 1, 3 or 5", cfg.Replicas)
	}
}

// knownServers is the distinct host:port of every server the connection
// knows of: those its URL lists and those the cluster announced.
func knownServers(nc *nats.Conn) []string {
	seen := map[string]bool{}
	var out []string
	for _, u := range nc.Servers() {
		if p, err := neturl.Parse(u); err == nil && p.Host != "" && !seen[p.Host] {
			seen[p.Host] = true
			out = append(out, p.Host)
		}
	}
	return out
}

// unplaced is err, explained when the servers could not place n replicas
// of a stream: a single server (not clustered), or a cluster with fewer
// JetStream servers up than n.
func unplaced(err error, n int) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case jsErrReplicasNotSupported:
		return fmt.Errorf("%w: the NATS server is not a cluster and cannot hold %d replicas: connect to a JetStream cluster of at least %d servers or use --nats-replicas 1", err, n, n)
	case jsErrNoPeers, jsErrInsufficientResources:
		return fmt.Errorf("%w: the cluster cannot place %d replicas: it needs %d JetStream servers up with room for the stream (check with `nats server list` or each server's /jsz), or use fewer --nats-replicas", err, n, n)
	}
	return err
}

// JetStream API error codes of placement (nats-server's
// jetstream_errors_generated.go; nats.go has no constants for them).
const (
	jsErrNoPeers               jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsErrInsufficientResources jetstream.ErrorCode = 10023
	jsErrReplicasNotSupported  jetstream.ErrorCode = 10074 // replicas > 1 not supported in non-clustered mode
)

// errRefused is the cause of a request the broker refused (a permissions
// violation on the connection).
var errRefused = errors.New("permissions violation")

// notPrepared is err, or ErrNotPrepared naming stream and why when the
// broker refused the request.
func (s *Store) notPrepared(ctx context.Context, stream, why string, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errRefused) {
		return fmt.Errorf("%w: stream %s: %s, and this node's NATS user may not create or update streams (%v): start an unconfined node or open the store as the NATS admin user first, or repair the stream's configuration", ErrNotPrepared, stream, why, cause)
	}
	return err
}

// declareKV declares a bucket's stream (want, from kvConfig) and binds it
// as a bucket.
func (s *Store) declareKV(ctx context.Context, bucket string, want jetstream.StreamConfig, upgrade func(context.Context, jetstream.Stream) error) (jetstream.KeyValue, error) {
	if _, err := s.declare(ctx, want, upgrade); err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", bucket, err)
	}
	b, err := s.JS.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", bucket, err)
	}
	return b, nil
}

// dropMarkers upgrades a policy archive an earlier ExoArmur created (a
// plain KV bucket of history 1, whose keys could be deleted or purged):
// once a key holds one message for good, a key whose one message is a
// delete or purge marker could never be written again, so before the
// upgrade such keys are purged, and the bundle can be archived again.
func dropMarkers(ctx context.Context, st jetstream.Stream) error {
	if st.CachedInfo().Config.DenyPurge {
		return nil // already write-once: nothing can have been deleted since
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return err
	}
	for _, subject := range slices.Sorted(func(yield func(string) bool) {
		for k := range info.State.Subjects {
			if !yield(k) {
				return
			}
		}
	}) {
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return err
		}
		if op := m.Header.Get(kvOperation); op == "" {
			continue
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return err
		}
	}
	return nil
}

// kvOperation is the header of a KV delete or purge marker (the KV API's).
const kvOperation = "KV-Operation"

// watchViolations sets (nil: clears) the function told the subject of each
// permissions violation the broker reports on the connection.
func (s *Store) watchViolations(f func(subject string)) {
	if f == nil {
		s.violation.Store(nil)
		return
	}
	s.violation.Store(&f)
}

// asyncError is the connection's error handler: it tells a permissions
// violation's subject to the watcher (declare), and writes every error to
// stderr as the nats.go default handler does.
func (s *Store) asyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		if f := s.violation.Load(); f != nil {
			if _, rest, ok := strings.Cut(err.Error(), `Publish to "`); ok {
				if subject, _, ok := strings.Cut(rest, `"`); ok {
					(*f)(subject)
				}
			}
		}
	}
	defaultErrHandler(nc, sub, err)
}

// defaultErrHandler writes err to stderr, as nats.go's default handler.
func defaultErrHandler(nc *nats.Conn, sub *nats.Subscription, err error) {
	cid, _ := nc.GetClientID()
	if sub != nil {
		fmt.Fprintf(os.Stderr, "%s on connection [%d] for subscription on %q\n", err, cid, sub.Subject)
		return
	}
	fmt.Fprintf(os.Stderr, "%s on connection [%d]\n", err, cid)
}
