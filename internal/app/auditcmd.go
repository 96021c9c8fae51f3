package app

import (
	"context"
	"fmt"
	"os"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

func runAudit(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "export") {
		return fmt.Errorf("%w: expected: exoarmur audit verify|export --tenant T [--out FILE]", errUsage)
	}
	sub := args[0]
	var sc StoreConfig
	fs := newFlagSet("audit "+sub, env)
	sc.register(fs)
	tname := fs.String("tenant", "", "tenant whose chain to read (required)")
	out := fs.String("out", "", "export: write JSONL here instead of stdout")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	t, err := tenant.Parse(*tname)
	if err != nil {
		return fmt.Errorf("%w: --tenant: %v", errUsage, err)
	}
	st, err := openStore(ctx, sc, "exoarmur-audit", nil)
	if err != nil {
		return err
	}
	defer st.Close()
	log := audit.New(st.Audit)
	if sub == "export" {
		return exportTenant(ctx, log, t, *out, env)
	}
	bundles, err := storedBundles(st, warnCorrupt(env))(ctx)
	if err != nil {
		return err
	}
	rp := replay.NewWith(t.String(), bundles, action.Builtin())
	if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
		return err
	}
	rep := rp.Report()
	b, err := replay.Encode(rep)
	if err != nil {
		return err
	}
	env.Stdout.Write(b)
	if !rep.Pass {
		return fmt.Errorf("audit chain of %s does not verify (%d mismatches)", t, len(rep.Mismatches))
	}
	return nil
}

func exportTenant(ctx context.Context, log *audit.Log, t tenant.ID, out string, env Env) error {
	var buf []byte
	n := 0
	if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error {
		buf = append(append(buf, raw...), '\n')
		n++
		return nil
	}); err != nil {
		return err
	}
	if out == "" {
		_, err := env.Stdout.Write(buf)
		return err
	}
	if err := writeFileAtomic(out, buf); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "exported %d records of %s to %s\n", n, t, out)
	return nil
}

// writeFileAtomic writes via a temporary file and rename, so a reader never
// sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
