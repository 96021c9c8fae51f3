package tenant

import (
	"fmt"
	"strings"
)

// Stream, bucket and subject names. Every name ExoArmur uses in NATS is here.
const (
	// AuditStream holds every tenant's audit chain, one subject per tenant.
	AuditStream = "EXOARMUR_AUDIT"
	// AuditSubjects is the subject filter of AuditStream.
	AuditSubjects = "exoarmur.v1.audit.*"
	auditPrefix   = "exoarmur.v1.audit."

	// IntentsBucket stores intents with their state, keyed <tenant>.<intent>.
	IntentsBucket = "exoarmur_intents"
	// IdempotencyBucket is the create-only idempotency ledger, keyed <tenant>.<key>.
	IdempotencyBucket = "exoarmur_idempotency"
	// PrincipalsBucket is the API key registry (hashes only), keyed by key id.
	PrincipalsBucket = "exoarmur_principals"

	// ApprovalsBucket holds one approval record per intent, keyed
	// <tenant>.<intent>, with history.
	ApprovalsBucket = "exoarmur_approvals"

	// WorkStream is the work queue of the background executor: one message
	// per approved intent submitted with execute_when_approved.
	WorkStream   = "EXOARMUR_INTENTS"
	WorkSubjects = "exoarmur.v1.intents.*"
	workPrefix   = "exoarmur.v1.intents."
	// WorkConsumer is the durable consumer every node's worker shares.
	WorkConsumer = "exoarmur-worker"

	// PoliciesBucket keeps every policy bundle a node decided under, its
	// cedar source keyed by its hash (internal/policy/archive), each key
	// written once; no tenant data.
	PoliciesBucket = "exoarmur_policies"

	// CheckpointsBucket keeps the signed checkpoints of the audit chains
	// (internal/checkpoint), keyed CheckpointKey, and the public keys that
	// signed them, keyed CheckpointPubKey; each key written once.
	CheckpointsBucket = "exoarmur_checkpoints"

	// HealthBucket holds HealthKey, a timestamp every node writes twice a
	// second: a write that is acknowledged proves the store can persist
	// (the connection and JetStream's API stay up when its disk is full).
	HealthBucket = "exoarmur_health"
	// HealthKey is the one key of HealthBucket.
	HealthKey = "probe"

	// ControlBucket holds the kill switches (GlobalSwitchKey and
	// <tenant>.killswitch) and the active policy bundles (GlobalPolicyKey
	// and <tenant>.policy): everything every node must apply before it
	// acknowledges a revision.
	ControlBucket = "exoarmur_control"
	// ControlStream is the stream behind ControlBucket (JetStream's KV_ prefix).
	ControlStream = "KV_" + ControlBucket
	// GlobalSwitchKey is the global kill switch's key; '_' cannot start a
	// tenant ID, so it cannot collide with a tenant's key.
	GlobalSwitchKey = "_global.killswitch"
	// GlobalPolicyKey is the key of the global active policy bundle: the
	// default of every tenant without one of its own.
	GlobalPolicyKey = "_global.policy"
	// ControlAppliedSubject carries each node's applied control revision
	// (core NATS, not persisted): how a switch change learns it reached
	// every live node.
	ControlAppliedSubject = "exoarmur.v1.control.applied"
)

// System is the reserved tenant whose audit chain records global control
// changes (the global kill switch). Parse refuses it, so no caller can act
// as it; only this package hands it out.
var System = ID{"system"}

// Exemption names one piece of state that is deliberately not tenant scoped.
type Exemption struct {
	Name   string // bucket or subject
	Reason string
}

// GlobalExemptions lists every name that is shared across tenants, with the
// reason. A test checks that nothing else is written outside a tenant scope.
var GlobalExemptions = []Exemption{
	{PrincipalsBucket, "the API key registry: one key may be granted several tenants, so it cannot live in one tenant's scope; keys are hashed and listing is admin only"},
	{GlobalSwitchKey, "the global kill switch: one switch that stops every tenant; changed by admins only, every change audited in the system chain"},
	{GlobalPolicyKey, "the global active policy bundle (its hash): the default of every tenant that has none of its own; activated by admins with the system grant only, every activation audited in the system chain"},
	{AuditSubject(System), "the system audit chain: global control changes (the global kill switch, the global policy), which belong to no tenant"},
	{HealthBucket, "the store's write probe: a timestamp overwritten by every node twice a second; holds no tenant data"},
	{ControlAppliedSubject, "propagation acknowledgements of control revisions between nodes; carries node names and revisions only, no tenant data"},
}

// TenantSwitchKey is the control-bucket key of tenant id's kill switch.
func TenantSwitchKey(id ID) string { return id.s + ".killswitch" }

// SwitchKeyTenant returns the tenant of a control key, or System for the
// global switch.
func SwitchKeyTenant(key string) (ID, error) {
	if key == GlobalSwitchKey {
		return System, nil
	}
	name, ok := strings.CutSuffix(key, ".killswitch")
	if !ok {
		return ID{}, ErrInvalid
	}
	return Parse(name)
}

// TenantPolicyKey is the control-bucket key of tenant id's active policy
// bundle.
func TenantPolicyKey(id ID) string { return id.s + ".policy" }

// PolicyKeyTenant returns the tenant of an active-policy control key, or
// System for the global one.
func PolicyKeyTenant(key string) (ID, error) {
	if key == GlobalPolicyKey {
		return System, nil
	}
	name, ok := strings.CutSuffix(key, ".policy")
	if !ok {
		return ID{}, ErrInvalid
	}
	return Parse(name)
}

// AuditSubject is the subject of tenant id's audit chain.
func AuditSubject(id ID) string { return auditPrefix + id.s }

// TenantFromAuditSubject returns the tenant of an audit subject.
func TenantFromAuditSubject(subj string) (ID, error) {
	if len(subj) <= len(auditPrefix) || subj[:len(auditPrefix)] != auditPrefix {
		return ID{}, ErrInvalid
	}
	if subj == AuditSubject(System) {
		return System, nil
	}
	return Parse(subj[len(auditPrefix):])
}

// IntentKey is the intents-bucket key of an intent. intentID must have passed
// ValidIntentID.
func IntentKey(id ID, intentID string) string { return id.s + "." + intentID }

// IntentKeyFilter matches every intent key of a tenant.
func IntentKeyFilter(id ID) string { return id.s + ".*" }

// ApprovalKey is the approvals-bucket key of an intent's approval.
func ApprovalKey(id ID, intentID string) string { return id.s + "." + intentID }

// CheckpointKey is the checkpoints-bucket key of tenant id's checkpoint of
// record seq signed by key keyID (hex): the sequence zero-padded, so that
// keys sort by sequence.
func CheckpointKey(id ID, seq uint64, keyID string) string {
	return fmt.Sprintf("%s.%020d.%s", id.s, seq, keyID)
}

// CheckpointKeyFilter matches every checkpoint key of a tenant.
func CheckpointKeyFilter(id ID) string { return id.s + ".*.*" }

// CheckpointPubKey is the checkpoints-bucket key under which the public
// key keyID is announced; '_' cannot start a tenant ID.
func CheckpointPubKey(keyID string) string { return "_keys." + keyID }

// CheckpointPubKeyFilter matches every announced public key.
const CheckpointPubKeyFilter = "_keys.*"

// WorkSubject is the work-queue subject of tenant id.
func WorkSubject(id ID) string { return workPrefix + id.s }

// KVStream is the stream behind a KV bucket (JetStream's layout).
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject is the subject a write to key of bucket is published on (the
// KV API's own layout), for writes the KV API cannot express.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// IdempotencyKey is the ledger key of an idempotency key. key must have passed
// ValidIdempotencyKey.
func IdempotencyKey(id ID, key string) string { return id.s + "." + key }

// RepairKey is the idempotency-ledger key that notes a finished execution
// whose outcome record is missing (gate: the sweep appends it). It has one
// more token than every claim key (an idempotency key holds no dot), so a
// listing of claims (IdempotencyKey(id, "*")) never sees it.
func RepairKey(id ID, key string) string { return id.s + ".unaudited." + key }

// RepairKeyFilter matches every tenant's RepairKey.
const RepairKeyFilter = "*.unaudited.*"

// ParseRepairKey returns the tenant and idempotency key of a RepairKey.
func ParseRepairKey(k string) (ID, string, error) {
	t, rest, ok := strings.Cut(k, ".unaudited.")
	if !ok {
		return ID{}, "", fmt.Errorf("repair key %q: %w", truncate(k), ErrInvalid)
	}
	id, err := Parse(t)
	if err != nil {
		return ID{}, "", err
	}
	if err := ValidIdempotencyKey(rest); err != nil {
		return ID{}, "", err
	}
	return id, rest, nil
}

// NodePublishAllow is the broker-side publish allow-list of an ExoArmur node
// confined to tenants: its audit chains, its keys in the tenant-scoped
// buckets, its kill switches, the propagation subject, and the JetStream API
// (less the destructive calls in NodePublishDeny). With global, the node may
// also change the global switch and append to the system chain.
func NodePublishAllow(tenants []ID, global bool) []string {
	allow := []string{"$JS.API.>", ControlAppliedSubject, "$KV." + HealthBucket + "." + HealthKey,
		// Write-once at the server (natsstore declares the bucket so) and
		// verified against the key on read: a node can add the bundle it
		// decides under, never change or remove what another decided under.
		"$KV." + PoliciesBucket + ".>",
		// Write-once too: a node announces the public key it signs with.
		"$KV." + CheckpointsBucket + "._keys.*"}
	for _, t := range tenants {
		allow = append(allow,
			AuditSubject(t),
			WorkSubject(t),
			"$KV."+ApprovalsBucket+"."+t.s+".>",
			"$KV."+IntentsBucket+"."+t.s+".>",
			"$KV."+IdempotencyBucket+"."+t.s+".>",
			"$KV."+ControlBucket+"."+TenantSwitchKey(t),
			"$KV."+ControlBucket+"."+TenantPolicyKey(t),
			"$KV."+CheckpointsBucket+"."+t.s+".>",
		)
	}
	if global {
		allow = append(allow, AuditSubject(System), "$KV."+ControlBucket+"."+GlobalSwitchKey, "$KV."+ControlBucket+"."+GlobalPolicyKey)
	}
	return allow
}

// NodePublishDeny lists the JetStream API calls no node may make, each of
// which would cut across tenants: creating, updating, deleting, purging or
// restoring a stream, or removing its peer (an update of the shared audit
// stream's limits or discard policy alone would drop other tenants'
// records), and deleting a message; deleting or pausing a consumer of
// WorkStream (WorkConsumer, which every node's worker shares). Consumers
// of the other streams stay allowed: a node creates and deletes the
// ephemeral ones its audit scans and KV reads use (their names are
// random, so a node could delete another's, which fails that read, never
// a write). So a confined node uses the streams an unconfined node or the
// NATS admin user declared (natsstore.Open).
func NodePublishDeny() []string {
	return []string{
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.RESTORE.>", "$JS.API.STREAM.PEER.REMOVE.>", "$JS.API.STREAM.MSG.DELETE.>",
		"$JS.API.CONSUMER.DELETE." + WorkStream + ".>", "$JS.API.CONSUMER.PAUSE." + WorkStream + ".>",
	}
}
