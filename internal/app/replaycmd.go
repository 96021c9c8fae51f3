package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/mcp"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// errReplayFailed is returned when the report does not pass (exit 1).
var errReplayFailed = errors.New("replay failed")

func runReplay(ctx context.Context, env Env, args []string) error {
	var sc StoreConfig
	fs := newCommand(env, cmdHelp{
		Name: "replay",
		Args: "[--from-export FILE | --data-dir D | --nats-url U] [--tenant T] [--trusted-key PUB [--checkpoint FILE]] [--actions-file F] [--mcp-config F] [--bundle DIR] [--policy-dir CANDIDATE] [--out FILE]",
		About: "Verifies the audit chains and recomputes every decision, from a JSONL export or the live store (every tenant, or T); " +
			"with --trusted-key, also the signed checkpoints: an export must end with the checkpoint of its last record (a cut, rewritten or re-hashed export fails) " +
			"and, with --tenant, hold no other tenant's records; the live store must contain each trusted key's latest checkpoint; and every chain must contain " +
			"the checkpoints of --checkpoint (kept outside the store: a chain recreated shorter or different fails). " +
			"Each decision is re-decided under the bundle recorded with it: those this binary shipped, those archived in the store, and with --bundle those of policy directories (an export carries no bundles). " +
			"Writes the canonical report (JSON) to stdout or --out and a summary to stderr; exit 1 unless it passes. " +
			"With --policy-dir CANDIDATE, a counterfactual replay instead: every recorded decision is decided again under the candidate bundle, " +
			"and each one it decides otherwise is listed with the verdict, reasons and deciding policies under both (JSON report; action decisions only, not the candidate's operation policies); nothing is changed; it exits 0 whatever differs, 1 when a line or decision could not be read or there was no decision.",
		Example: "replay --from-export acme.jsonl --tenant acme --trusted-key \"$(exoarmur audit pubkey)\" --out report.json",
	})
	sc.register(fs.FlagSet)
	from := fs.String("from-export", "", "replay this JSONL export instead of the live store")
	actionsFile := fs.String("actions-file", "", "the actions file the server ran with (docs/ACTIONS.md), so its declared actions re-decide; secrets are not read")
	mcpFile := fs.String("mcp-config", "", "the MCP configuration the server ran with (docs/MCP.md), so the MCP tools it maps to a class re-decide; no server is contacted, no secret read")
	tname := fs.String("tenant", "", "replay only this tenant")
	out := fs.String("out", "", "write the report here (default stdout)")
	var bundleDirs stringArgs
	fs.Var(&bundleDirs, "bundle", "a policy directory whose bundle decisions may have been recorded under (repeatable)")
	candidate := fs.String("policy-dir", "", "counterfactual replay: decide every recorded decision again under this policy directory's bundle and list those it decides otherwise")
	var anchors anchorFlags
	anchors.register(fs.FlagSet)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	var only tenant.ID
	if *tname != "" {
		t, err := tenant.Parse(*tname)
		if err != nil {
			return fs.usageErr("--tenant: %v", err)
		}
		only = t
	}
	actions, err := replayActions(*actionsFile)
	if err == nil {
		actions, err = withMCPTools(actions, *mcpFile)
	}
	if err != nil {
		return err
	}
	if *candidate != "" {
		if len(anchors.trusted) > 0 || anchors.file != "" || len(bundleDirs) > 0 {
			return fs.usageErr("--policy-dir (a counterfactual replay) verifies no chain and no checkpoint and re-decides under the candidate only: run replay without it, with --trusted-key, --checkpoint or --bundle, to verify")
		}
		return runCounterfactual(ctx, env, sc, *from, *candidate, only, *out, actions)
	}
	var extra []*policy.Bundle
	for _, d := range bundleDirs {
		b, err := loadPolicyDir(d, actions)
		if err != nil {
			return fmt.Errorf("--bundle: %w", err)
		}
		extra = append(extra, b)
	}
	var rp *replay.Replayer
	if *from != "" {
		// An export carries records, not bundles: the bundles this
		// binary shipped, and those of --bundle, re-decide them.
		rp = replay.NewWith(only.String(), policy.Builtin().With(extra...), actions)
		if _, err := anchors.apply(rp, true); err != nil {
			return err
		}
		f, err := os.Open(*from)
		if err != nil {
			return fmt.Errorf("open export: %w", err)
		}
		defer f.Close()
		if err := rp.ReadJSONL(f); err != nil {
			return err
		}
	} else {
		if rp, err = replayLive(ctx, env, sc, only, anchors, actions, extra); err != nil {
			return err
		}
	}
	rep := rp.Report()
	b, err := replay.Encode(rep)
	if err != nil {
		return err
	}
	if err := writeReport(env, *out, b); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "replay: pass=%t records=%d decisions=%d matched=%d mismatches=%d replay_hash=%s\n",
		rep.Pass, rep.Records, rep.Decisions, rep.DecisionsMatched, len(rep.Mismatches), rep.ReplayHash)
	if n := rp.Checkpoints(); n > 0 {
		fmt.Fprintf(env.Stderr, "replay: %d checkpoints not verified: give --trusted-key (exoarmur audit pubkey) to check them\n", n)
	}
	for _, m := range rep.Mismatches {
		fmt.Fprintf(env.Stderr, "replay: MISMATCH tenant=%s seq=%d kind=%s: %s\n", m.Tenant, m.Seq, m.Kind, m.Reason)
	}
	if !rep.Pass {
		return errReplayFailed
	}
	return nil
}

// replayActions is the registry a replay outside the server re-decides
// with: the built-ins and the actions file's declared actions (parsed and
// checked, its secrets not read: deciding needs none). A recorded intent
// of a type it lacks re-decides as action_unknown and is a mismatch.
func replayActions(path string) (*action.Registry, error) {
	r, err := action.LoadFile(path, action.ParseOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: --actions-file: %v", errUsage, err)
	}
	return r, nil
}

// withMCPTools adds to r the tools an MCP configuration maps to a class
// (mcp.Config.MappedRegistrations: no server is contacted, no secret
// read); path "" adds nothing.
func withMCPTools(r *action.Registry, path string) (*action.Registry, error) {
	if path == "" {
		return r, nil
	}
	c, err := mcp.LoadConfig(path, mcp.ParseOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: --mcp-config: %v", errUsage, err)
	}
	regs, err := c.MappedRegistrations()
	if err != nil {
		return nil, fmt.Errorf("%w: --mcp-config: %v", errUsage, err)
	}
	out, err := action.New(append(r.List(), regs...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: --mcp-config: %v", errUsage, err)
	}
	return out, nil
}

// replayLive replays the store's chains (only's, or every tenant's) with
// the bundles this binary shipped and those archived in the store.
func replayLive(ctx context.Context, env Env, sc StoreConfig, only tenant.ID, anchors anchorFlags, actions *action.Registry, extra []*policy.Bundle) (*replay.Replayer, error) {
	st, err := openExistingStore(ctx, sc, "exoarmur-replay")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	bundles, err := storedBundles(st, warnCorrupt(env))(ctx)
	if err != nil {
		return nil, err
	}
	rp := replay.NewWith(only.String(), withBundles{bundles, policy.NewLibrary(extra...)}, actions)
	anchored, err := anchors.apply(rp, false)
	if err != nil {
		return nil, err
	}
	log := audit.New(st.Audit)
	tenants, err := tenantsOf(ctx, log, only)
	if err != nil {
		return nil, err
	}
	if anchored {
		for _, t := range tenants {
			if err := requireStored(ctx, st, rp, anchors, t); err != nil {
				return nil, err
			}
		}
	}
	if err := scanTenants(ctx, log, tenants, rp.Add); err != nil {
		return nil, err
	}
	return rp, nil
}

// writeReport writes a report to path, or to stdout without one.
func writeReport(env Env, path string, b []byte) error {
	if path != "" {
		return writeFileAtomic(path, b)
	}
	_, err := env.Stdout.Write(b)
	return err
}

// tenantsOf is only, or every tenant of the log when only is zero.
func tenantsOf(ctx context.Context, log *audit.Log, only tenant.ID) ([]tenant.ID, error) {
	if !only.IsZero() {
		return []tenant.ID{only}, nil
	}
	return log.Tenants(ctx)
}

// scanTenants feeds every record of the tenants' chains to add.
func scanTenants(ctx context.Context, log *audit.Log, tenants []tenant.ID, add func([]byte)) error {
	for _, t := range tenants {
		if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { add(raw); return nil }); err != nil {
			return err
		}
	}
	return nil
}

// withBundles finds a bundle in the store's library, then in extra.
type withBundles struct {
	replay.Bundles
	extra *policy.Library
}

func (w withBundles) Lookup(hash string) (*policy.Bundle, error) {
	if b, err := w.extra.Lookup(hash); err == nil {
		return b, nil
	}
	return w.Bundles.Lookup(hash)
}

// runCounterfactual decides the recorded decisions of an export (or the
// live store) again under the candidate directory's bundle and writes
// what it decides otherwise.
func runCounterfactual(ctx context.Context, env Env, sc StoreConfig, from, dir string, only tenant.ID, out string, actions *action.Registry) error {
	candidate, err := loadPolicyDir(dir, actions)
	if err != nil {
		return fmt.Errorf("--policy-dir: %w", err)
	}
	cf := replay.NewCounterfactual(only.String(), candidate, actions)
	if from != "" {
		f, err := os.Open(from)
		if err != nil {
			return fmt.Errorf("open export: %w", err)
		}
		defer f.Close()
		if err := cf.ReadJSONL(f); err != nil {
			return err
		}
	} else {
		st, err := openExistingStore(ctx, sc, "exoarmur-replay")
		if err != nil {
			return err
		}
		defer st.Close()
		log := audit.New(st.Audit)
		tenants, err := tenantsOf(ctx, log, only)
		if err != nil {
			return err
		}
		if err := scanTenants(ctx, log, tenants, cf.Add); err != nil {
			return err
		}
	}
	rep := cf.Report()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if err := writeReport(env, out, buf.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "counterfactual: candidate=%s records=%d decisions=%d differ=%d unreadable=%d (%s)\n", rep.Candidate, rep.Records, rep.Decisions, rep.Differ, rep.Unreadable, rep.Compares)
	for _, d := range rep.Differences {
		fmt.Fprintf(env.Stderr, "counterfactual: DIFFERS tenant=%s seq=%d %s %s %q: recorded %s %v (%s), candidate %s %v (%s)\n",
			d.Tenant, d.Seq, d.Kind, d.Action, d.Target, d.Recorded.Verdict, d.Recorded.Reasons, d.Recorded.Policies,
			d.Candidate.Verdict, d.Candidate.Reasons, d.Candidate.Policies)
	}
	switch {
	case rep.Unreadable > 0:
		return fmt.Errorf("%w: %d lines or decision records could not be read: what they decided is unknown (verify the export with replay)", errReplayFailed, rep.Unreadable)
	case rep.Decisions == 0:
		return fmt.Errorf("%w: no recorded decision to decide again", errReplayFailed)
	}
	return nil
}
