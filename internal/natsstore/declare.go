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
		AllowDirect:       true,
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
// subjects). Not compared, as the operator's to choose: description,
// replicas and placement, compression, max message size, max consumers,
// direct get, republish and metadata.
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
		if why = differs(st.CachedInfo().Config, want); why == "" {
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
		return nil, s.notPrepared(dctx, want.Name, why, fmt.Errorf("ensure stream %s: %w", want.Name, err))
	}
	return st, nil
}

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
