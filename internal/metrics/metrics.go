// Package metrics holds ExoArmur's Prometheus metrics (client_golang, the
// reference implementation of the exposition format): gate decisions by
// verdict and reason, execution and audit-append latency, kill switch state
// per scope, and pending approvals. The API serves them on GET /metrics.
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every ExoArmur metric (no global default registry).
var Registry = prometheus.NewRegistry()

var (
	// Decisions counts gate decisions by verdict and first reason ("" on ALLOW).
	Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exoarmur_gate_decisions_total", Help: "Gate decisions by verdict and first reason.",
	}, []string{"verdict", "reason"})
	// ExecutionSeconds is executor latency by action and status.
	ExecutionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "exoarmur_execution_seconds", Help: "Executor run time by action and status.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"action", "status"})
	// AuditAppendSeconds is the latency of a durable audit append.
	AuditAppendSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "exoarmur_audit_append_seconds", Help: "Durable audit append latency (publish to acknowledgement).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	})
	// Checkpoints counts signed audit checkpoints, and the failures to
	// sign (the chain no longer extends the last checkpoint), store or
	// witness one, by outcome.
	Checkpoints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exoarmur_audit_checkpoints_total", Help: "Audit checkpoints by outcome: signed, diverged (not signed: the chain no longer extends the last checkpoint), store_failed, witness_failed.",
	}, []string{"outcome"})
	// KillSwitchEngaged is 1 when the switch of a scope reads engaged on this node.
	KillSwitchEngaged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "exoarmur_killswitch_engaged", Help: "1 when the kill switch of the scope is engaged (as this node reads it).",
	}, []string{"scope"})
	// RateLimited counts requests refused by a rate limit (internal/access)
	// by operation and the limit that refused (principal or tenant).
	RateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exoarmur_rate_limited_total", Help: "Requests refused by a rate limit, by operation and scope (principal or tenant).",
	}, []string{"operation", "scope"})
	// ShadowDecisions counts the decisions a shadow bundle was evaluated
	// on, by whether it decided otherwise than the active bundle.
	ShadowDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exoarmur_policy_shadow_decisions_total", Help: "Decisions the shadow policy bundle was evaluated on (never enforced), by outcome: same or differs.",
	}, []string{"outcome"})
	// QuotaRefused counts proposals refused by a tenant quota (internal/gate)
	// by the quota (pending_intents, pending_approvals, stored_bytes).
	QuotaRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exoarmur_quota_refused_total", Help: "Proposals refused by a tenant quota, by quota.",
	}, []string{"quota"})
)

var (
	pendingMu sync.Mutex
	pendingFn func() map[string]int
)

type pendingCollector struct{ desc *prometheus.Desc }

func (c pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c pendingCollector) Collect(ch chan<- prometheus.Metric) {
	pendingMu.Lock()
	fn := pendingFn
	pendingMu.Unlock()
	if fn == nil {
		return
	}
	for tenant, n := range fn() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), tenant)
	}
}

// SetPendingApprovals installs the function that counts pending approvals
// per tenant at scrape time.
func SetPendingApprovals(fn func() map[string]int) {
	pendingMu.Lock()
	defer pendingMu.Unlock()
	pendingFn = fn
}

func init() {
	Registry.MustRegister(Decisions, ExecutionSeconds, AuditAppendSeconds, KillSwitchEngaged, Checkpoints, RateLimited, QuotaRefused, ShadowDecisions,
		pendingCollector{prometheus.NewDesc("exoarmur_approvals_pending", "Pending approval requests per tenant.", []string{"tenant"}, nil)},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Handler serves the registry in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}
