package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// TestStoredBundlesWarnOfCorruptEntries: a junk entry in the policy
// archive (any node can add one) does not fail the library a verification
// or replay uses (it used to, so every verify answered 503): the shipped
// bundles still resolve, and the CLI warns on stderr naming the entry.
func TestStoredBundlesWarnOfCorruptEntries(t *testing.T) {
	ctx := context.Background()
	st, err := natsstore.Open(ctx, natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Policies.Put(ctx, "not-a-hash", []byte("junk"), kv.PutOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	lib, err := storedBundles(st, warnCorrupt(Env{Stderr: &stderr}))(ctx)
	if err != nil {
		t.Fatalf("library with a junk entry: %v", err)
	}
	if _, err := lib.Lookup(policy.Default().Hash()); err != nil {
		t.Fatalf("the shipped bundle: %v", err)
	}
	if w := stderr.String(); !strings.HasPrefix(w, "warning: ") || !strings.Contains(w, `"not-a-hash"`) || strings.Count(w, "\n") != 1 {
		t.Fatalf("stderr: %q; want one warning naming the entry", w)
	}
}
