package tenant

import (
	"strings"
	"testing"
)

func TestRepairKeyRoundTrip(t *testing.T) {
	acme := MustParse("acme")
	k := RepairKey(acme, "order-7")
	if got, idem, err := ParseRepairKey(k); err != nil || got != acme || idem != "order-7" {
		t.Fatalf("ParseRepairKey(%q) = %v %q %v", k, got, idem, err)
	}
	if strings.Count(k, ".") == strings.Count(IdempotencyKey(acme, "order-7"), ".") {
		t.Fatalf("repair key %q has as many tokens as a claim key: a claim listing would see it", k)
	}
	for _, bad := range []string{"acme.order-7", "acme.unaudited.", "ACME!.unaudited.k", "acme.unaudited.a.b", ".unaudited.k"} {
		if _, _, err := ParseRepairKey(bad); err == nil {
			t.Errorf("ParseRepairKey(%q): accepted", bad)
		}
	}
}
