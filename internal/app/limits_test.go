package app

import (
	"errors"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/access"
)

// TestLimitFlags: serve's (and check-config's) rate and quota flags parse
// RATE[:BURST], 0/off and sizes, keep documented defaults, and refuse
// nonsense as a usage error naming the flag.
func TestLimitFlags(t *testing.T) {
	parse := func(args ...string) (ServeConfig, error) {
		return parseServe("check-config", Env{Stdout: &strings.Builder{}, Stderr: &strings.Builder{}}, append([]string{"--data-dir", t.TempDir()}, args...), nil)
	}
	c, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.Rates != access.DefaultRates() || c.Limits.Quotas.PendingIntents != 10000 || c.Limits.Quotas.PendingApprovals != 1000 ||
		c.Limits.Quotas.StoredBytes != 1<<30 || c.Limits.TenantReads != 2 {
		t.Fatalf("defaults: %+v", c.Limits)
	}
	c, err = parse("--rate-propose", "5", "--rate-execute-tenant", "2.5:7", "--rate-approve", "off", "--rate-approve-tenant", "0",
		"--quota-stored-bytes", "64MiB", "--quota-pending-intents", "0")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Limits.Rates
	if r.Propose.Principal != (access.Rate{PerSecond: 5, Burst: 10}) || r.Execute.Tenant != (access.Rate{PerSecond: 2.5, Burst: 7}) ||
		!r.Approve.Principal.Off() || !r.Approve.Tenant.Off() || c.Limits.Quotas.StoredBytes != 64<<20 || c.Limits.Quotas.PendingIntents != 0 {
		t.Fatalf("parsed: %+v", c.Limits)
	}
	for _, bad := range [][]string{
		{"--rate-propose", "5:0"}, {"--rate-propose", "-1"}, {"--rate-execute", "fast"}, {"--rate-approve", "0:5"}, {"--rate-propose", "NaN"},
		{"--quota-stored-bytes", "12XB"}, {"--quota-stored-bytes", "-1"}, {"--quota-pending-intents", "-1"}, {"--quota-pending-approvals", "-2"},
		{"--quota-refresh", "1ms"}, {"--tenant-reads", "0"},
	} {
		_, err := parse(bad...)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), strings.TrimPrefix(bad[0], "-")) {
			t.Errorf("%v: %v, want a usage error naming the flag", bad, err)
		}
	}
}
