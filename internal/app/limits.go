package app

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// LimitsConfig are serve's rate limits (internal/access, per node) and
// tenant quotas (internal/gate, per node, approximate).
type LimitsConfig struct {
	Rates  access.Rates
	Quotas gate.Quotas
	// TenantReads bounds one tenant's whole-tenant reads served at once
	// (api.Config.TenantReads).
	TenantReads int

	rateFlags   map[string]*rateValue
	storedBytes byteSize
}

// rateValue is a --rate-* flag: "RATE" or "RATE:BURST" (RATE a second,
// BURST the bucket's size, default twice RATE), or 0 or "off" for no limit.
type rateValue struct {
	r *access.Rate
}

func (v *rateValue) String() string {
	if v == nil || v.r == nil {
		return ""
	}
	if v.r.Off() {
		return "0"
	}
	return strconv.FormatFloat(v.r.PerSecond, 'g', -1, 64) + ":" + strconv.Itoa(v.r.Burst)
}

func (v *rateValue) Set(s string) error {
	r, err := parseRate(s)
	if err != nil {
		return err
	}
	*v.r = r
	return nil
}

// parseRate reads RATE[:BURST]; 0 and "off" are no limit.
func parseRate(s string) (access.Rate, error) {
	s = strings.TrimSpace(s)
	if s == "off" {
		return access.Rate{}, nil
	}
	rs, bs, hasBurst := strings.Cut(s, ":")
	rs = strings.TrimSuffix(rs, "/s")
	per, err := strconv.ParseFloat(rs, 64)
	if err != nil || per < 0 || math.IsInf(per, 0) || math.IsNaN(per) || per > 1e6 {
		return access.Rate{}, fmt.Errorf("%q: must be RATE or RATE:BURST (requests a second, 0 < RATE <= 1000000, and the burst, an integer >= 1), or 0 or off for no limit", s)
	}
	if per == 0 {
		if hasBurst {
			return access.Rate{}, fmt.Errorf("%q: a rate of 0 is no limit and takes no burst", s)
		}
		return access.Rate{}, nil
	}
	burst := int(math.Max(1, math.Ceil(2*per)))
	if hasBurst {
		b, err := strconv.Atoi(bs)
		if err != nil || b < 1 || b > 1e7 {
			return access.Rate{}, fmt.Errorf("%q: the burst must be an integer in 1..10000000", s)
		}
		burst = b
	}
	return access.Rate{PerSecond: per, Burst: burst}, nil
}

// byteSize is a size flag: an integer of bytes, or with a KiB, MiB or GiB
// suffix; 0 is no limit.
type byteSize struct{ n *int64 }

func (b byteSize) String() string {
	if b.n == nil {
		return ""
	}
	n := *b.n
	for _, u := range []struct {
		s string
		m int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b byteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		s string
		m int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v, ok := strings.CutSuffix(num, u.s); ok {
			num, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q: must be a number of bytes, optionally with KiB, MiB or GiB (0: no limit)", s)
	}
	*b.n = n * mult
	return nil
}

// Default tenant quotas (per node): see gate.Quotas.
const (
	DefaultQuotaPendingIntents   = 10000
	DefaultQuotaPendingApprovals = 1000
	DefaultQuotaStoredBytes      = 1 << 30
)

func (c *LimitsConfig) register(fs *flag.FlagSet) {
	c.Rates = access.DefaultRates()
	c.Quotas = gate.Quotas{PendingIntents: DefaultQuotaPendingIntents, PendingApprovals: DefaultQuotaPendingApprovals,
		StoredBytes: DefaultQuotaStoredBytes, Refresh: gate.DefaultQuotaRefresh}
	c.rateFlags = map[string]*rateValue{}
	for _, f := range []struct {
		name string
		r    *access.Rate
		help string
	}{
		{"rate-propose", &c.Rates.Propose.Principal, "proposals a second one key may make on this node"},
		{"rate-propose-tenant", &c.Rates.Propose.Tenant, "proposals a second all keys of one tenant may make on this node"},
		{"rate-execute", &c.Rates.Execute.Principal, "executions a second one key may ask on this node"},
		{"rate-execute-tenant", &c.Rates.Execute.Tenant, "executions a second all keys of one tenant may ask on this node"},
		{"rate-approve", &c.Rates.Approve.Principal, "approval votes a second one key may cast on this node"},
		{"rate-approve-tenant", &c.Rates.Approve.Tenant, "approval votes a second all keys of one tenant may cast on this node"},
	} {
		v := &rateValue{r: f.r}
		c.rateFlags[f.name] = v
		fs.Var(v, f.name, f.help+": RATE or RATE:BURST (burst default 2*RATE); beyond it 429 rate_limited with Retry-After; 0 or off: no limit")
	}
	fs.IntVar(&c.Quotas.PendingIntents, "quota-pending-intents", c.Quotas.PendingIntents, "intents one tenant may hold whose execution has not started; a proposal beyond is refused with 429 quota_exceeded, nothing stored (counted per node, see docs/RELIABILITY.md); 0: no limit")
	fs.IntVar(&c.Quotas.PendingApprovals, "quota-pending-approvals", c.Quotas.PendingApprovals, "approval requests one tenant may have pending; a proposal needing approval beyond is refused with 429 quota_exceeded; 0: no limit")
	c.storedBytes = byteSize{&c.Quotas.StoredBytes}
	fs.Var(c.storedBytes, "quota-stored-bytes", "bytes of intent records one tenant may hold in the live store (KiB, MiB, GiB suffixes); a proposal beyond is refused with 429 quota_exceeded; without --retention they never expire; 0: no limit")
	fs.IntVar(&c.TenantReads, "tenant-reads", api.DefaultTenantReads, "reads of one tenant that scan it whole (intent, approval and audit lists, export, verify) this node serves at once; more wait their turn")
	fs.DurationVar(&c.Quotas.Refresh, "quota-refresh", c.Quotas.Refresh, "how often a node counts a tenant's usage again from the store (seeing other nodes' writes and expiries)")
}

// Validate names the offending flag.
func (c *LimitsConfig) Validate() error {
	switch {
	case c.Quotas.PendingIntents < 0:
		return fmt.Errorf("--quota-pending-intents %d: must be 0 (no limit) or positive", c.Quotas.PendingIntents)
	case c.Quotas.PendingApprovals < 0:
		return fmt.Errorf("--quota-pending-approvals %d: must be 0 (no limit) or positive", c.Quotas.PendingApprovals)
	case c.Quotas.StoredBytes < 0:
		return fmt.Errorf("--quota-stored-bytes %d: must be 0 (no limit) or positive", c.Quotas.StoredBytes)
	case c.Quotas.Refresh < 0 || c.Quotas.Refresh > 0 && c.Quotas.Refresh < 100e6:
		return fmt.Errorf("--quota-refresh %s: must be at least 100ms", c.Quotas.Refresh)
	case c.TenantReads < 1 || c.TenantReads > 1024:
		return fmt.Errorf("--tenant-reads %d: must be in 1..1024", c.TenantReads)
	}
	if c.Quotas.Refresh == 0 {
		c.Quotas.Refresh = gate.DefaultQuotaRefresh
	}
	return nil
}
