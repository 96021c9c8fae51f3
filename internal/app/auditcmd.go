package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var auditGroup = group{
	name: "audit",
	about: "Read one tenant's audit chain on the store directly (--data-dir with the server stopped, or --nats-url while it runs). " +
		"Over the API the same is GET /v1/tenants/{tenant}/audit/verify and /audit/export.",
	example: "audit verify --data-dir ./data --tenant acme",
	subs: []subcommand{
		{"verify", "verify the tenant's hash chain and recompute every decision", auditSub("verify")},
		{"export", "write the tenant's chain as JSONL (for replay --from-export), ending with its checkpoint", auditSub("export")},
		{"checkpoint", "print the tenant chain's latest signed checkpoint (JSON)", runAuditCheckpoint},
		{"pubkey", "print the node's audit public key, which verifies its checkpoints", runAuditPubkey},
		{"rotate-key", "retire the node's audit key and make a new one (restart serve to use it)", runAuditRotate},
	},
}

func runAudit(ctx context.Context, env Env, args []string) error {
	return auditGroup.run(ctx, env, args)
}

func auditSub(sub string) func(context.Context, Env, []string) error {
	return func(ctx context.Context, env Env, args []string) error { return runAuditSub(ctx, env, sub, args) }
}

func runAuditSub(ctx context.Context, env Env, sub string, args []string) error {
	h := cmdHelp{Name: "audit verify", Args: "--tenant T [--data-dir D | --nats-url U] [--trusted-key PUB [--checkpoint FILE]] [--actions-file F] [--mcp-config F] [--json]",
		About: "Verifies tenant T's hash chain and recomputes every decision with the policy bundles this binary ships and the store archived; " +
			"with --trusted-key, also that the chain contains the latest checkpoint each trusted key stored, and the one in --checkpoint (a copy kept outside the store); exit 1 unless it verifies.",
		Example: "audit verify --data-dir ./data --tenant acme"}
	if sub == "export" {
		h = cmdHelp{Name: "audit export", Args: "--tenant T [--out FILE] [--data-dir D | --nats-url U] [--audit-key F]",
			About: "Writes tenant T's audit chain as JSONL, byte for byte as stored, to stdout or --out (atomically), ending with the checkpoint of its last record, " +
				"signed with the node's audit key (--audit-key, default <data-dir>/audit-key.json) once the chain read verified.",
			Example: "audit export --data-dir ./data --tenant acme --out acme.jsonl"}
	}
	var sc StoreConfig
	fs := newCommand(env, h)
	sc.register(fs.FlagSet)
	tname := fs.String("tenant", "", "tenant whose chain to read (required)")
	out, asJSON, keyFile, actionsFile, mcpFile := new(string), new(bool), new(string), new(string), new(string)
	var anchors anchorFlags
	if sub == "export" {
		out = fs.String("out", "", "write JSONL here instead of stdout")
		keyFile = fs.String("audit-key", "", "the node's audit key file, which signs the export's checkpoint (default <data-dir>/audit-key.json)")
	} else {
		actionsFile = fs.String("actions-file", "", "the actions file the server runs with (docs/ACTIONS.md), so its declared actions re-decide; secrets are not read")
		mcpFile = fs.String("mcp-config", "", "the MCP configuration the server runs with (docs/MCP.md), so the MCP tools it maps to a class re-decide; no server is contacted, no secret read")
		asJSON = fs.Bool("json", false, "print the replay report (JSON, contracts/v1/replay_report.schema.json) instead of the verdict")
		anchors.register(fs.FlagSet)
	}
	if _, err := fs.parse(args); err != nil {
		return err
	}
	t, err := tenant.Parse(*tname)
	if err != nil {
		return fs.usageErr("--tenant: %v", err)
	}
	st, err := openExistingStore(ctx, sc, "exoarmur-audit")
	if err != nil {
		return err
	}
	defer st.Close()
	log := audit.New(st.Audit)
	// A tenant without records is a wrong name, not a chain that fails to
	// verify (an empty chain would "verify" vacuously, or read like
	// tampering): say so, and name the tenants there are.
	if head, _, err := log.Head(ctx, t); err != nil {
		return err
	} else if head == 0 {
		return noRecords(ctx, log, t)
	}
	if sub == "export" {
		path := *keyFile
		if path == "" {
			path = filepath.Join(sc.DataDir, "audit-key.json")
		}
		return exportTenant(ctx, log, t, *out, env, newExportCheckpoint(ctx, st, log, t, path))
	}
	bundles, err := storedBundles(st, warnCorrupt(env))(ctx)
	if err != nil {
		return err
	}
	actions, err := replayActions(*actionsFile)
	if err == nil {
		actions, err = withMCPTools(actions, *mcpFile)
	}
	if err != nil {
		return err
	}
	rp := replay.NewWith(t.String(), bundles, actions)
	if anchored, err := anchors.apply(rp, false); err != nil {
		return err
	} else if anchored {
		if err := requireStored(ctx, st, rp, anchors, t); err != nil {
			return err
		}
	}
	if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
		return err
	}
	rep := rp.Report()
	if *asJSON {
		b, err := replay.Encode(rep)
		if err != nil {
			return err
		}
		env.Stdout.Write(b)
	} else {
		printVerdict(env, t, rep)
	}
	if !rep.Pass {
		return fmt.Errorf("audit chain of %s does not verify (%d mismatches)", t, len(rep.Mismatches))
	}
	return nil
}

// printVerdict is audit verify for a person: one line with the verdict and
// the counts, then one line per mismatch.
func printVerdict(env Env, t tenant.ID, rep contract.ReplayReport) {
	verdict := "verifies"
	if !rep.Pass {
		verdict = "DOES NOT VERIFY"
	}
	var head string
	for _, rt := range rep.Tenants {
		if rt.Tenant == t.String() {
			head = fmt.Sprintf(", head %d:%s", rt.HeadSeq, rt.HeadHash)
		}
	}
	fmt.Fprintf(env.Stdout, "audit chain of %s %s: %d records, %d decisions recomputed, %d matched, %d mismatches%s\n",
		t, verdict, rep.Records, rep.Decisions, rep.DecisionsMatched, len(rep.Mismatches), head)
	for _, m := range rep.Mismatches {
		fmt.Fprintf(env.Stdout, "  MISMATCH seq=%d kind=%s: %s\n", m.Seq, cell(m.Kind), cell(m.Reason))
	}
}

// noRecords is the error for a tenant without audit records.
func noRecords(ctx context.Context, log *audit.Log, t tenant.ID) error {
	known, err := log.Tenants(ctx)
	if err != nil {
		return fmt.Errorf("no records for tenant %s", t)
	}
	if len(known) == 0 {
		return fmt.Errorf("no records for tenant %s (the store holds no audit records)", t)
	}
	names := make([]string, len(known))
	for i, k := range known {
		names[i] = k.String()
	}
	return fmt.Errorf("no records for tenant %s (tenants with records: %s)", t, strings.Join(names, ", "))
}

func exportTenant(ctx context.Context, log *audit.Log, t tenant.ID, out string, env Env, cp exportCheckpoint) error {
	var buf []byte
	n := 0
	if err := log.ScanHeads(ctx, t, 0, 0, func(raw []byte, rec contract.AuditRecord) error {
		buf = append(append(buf, raw...), '\n')
		cp.next(raw, rec)
		n++
		return nil
	}); err != nil {
		return err
	}
	if line, err := cp.line(ctx); err != nil {
		fmt.Fprintf(env.Stderr, "warning: %v: %v\n", errNoCheckpoint, err)
	} else {
		buf = append(buf, line...)
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
