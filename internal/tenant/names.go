package tenant

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
)

// Exemption names one piece of state that is deliberately not tenant scoped.
type Exemption struct {
	Name   string // bucket or subject
	Reason string
}

// GlobalExemptions lists every name that is shared across tenants, with the
// reason. A test checks that nothing else is written outside a tenant scope.
var GlobalExemptions = []Exemption{
	{PrincipalsBucket, "the API key registry: one key may be granted several tenants, so it cannot live in one tenant's scope; keys are hashed and listing is admin only"},
}

// AuditSubject is the subject of tenant id's audit chain.
func AuditSubject(id ID) string { return auditPrefix + id.s }

// TenantFromAuditSubject returns the tenant of an audit subject.
func TenantFromAuditSubject(subj string) (ID, error) {
	if len(subj) <= len(auditPrefix) || subj[:len(auditPrefix)] != auditPrefix {
		return ID{}, ErrInvalid
	}
	return Parse(subj[len(auditPrefix):])
}

// IntentKey is the intents-bucket key of an intent. intentID must have passed
// ValidIntentID.
func IntentKey(id ID, intentID string) string { return id.s + "." + intentID }

// IntentKeyFilter matches every intent key of a tenant.
func IntentKeyFilter(id ID) string { return id.s + ".*" }

// IdempotencyKey is the ledger key of an idempotency key. key must have passed
// ValidIdempotencyKey.
func IdempotencyKey(id ID, key string) string { return id.s + "." + key }
