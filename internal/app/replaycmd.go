package app

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
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
		Args: "[--from-export FILE | --data-dir D | --nats-url U] [--tenant T] [--trusted-key PUB [--checkpoint FILE]] [--actions-file F] [--out FILE]",
		About: "Verifies the audit chains and recomputes every decision, from a JSONL export or the live store (every tenant, or T); " +
			"with --trusted-key, also the signed checkpoints: an export must end with the checkpoint of its last record (a cut, rewritten or re-hashed export fails) " +
			"and, with --tenant, hold no other tenant's records; the live store must contain each trusted key's latest checkpoint; and every chain must contain " +
			"the checkpoints of --checkpoint (kept outside the store: a chain recreated shorter or different fails). " +
			"Writes the canonical report (JSON) to stdout or --out and a summary to stderr; exit 1 unless it passes.",
		Example: "replay --from-export acme.jsonl --tenant acme --trusted-key \"$(exoarmur audit pubkey)\" --out report.json",
	})
	sc.register(fs.FlagSet)
	from := fs.String("from-export", "", "replay this JSONL export instead of the live store")
	actionsFile := fs.String("actions-file", "", "the actions file the server ran with (docs/ACTIONS.md), so its declared actions re-decide; secrets are not read")
	tname := fs.String("tenant", "", "replay only this tenant")
	out := fs.String("out", "", "write the report here (default stdout)")
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
	if err != nil {
		return err
	}
	var rp *replay.Replayer
	if *from != "" {
		// An export carries records, not bundles: the bundles this
		// binary shipped re-decide them.
		rp = replay.NewWith(only.String(), policy.Builtin(), actions)
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
		if rp, err = replayLive(ctx, env, sc, only, anchors, actions); err != nil {
			return err
		}
	}
	rep := rp.Report()
	b, err := replay.Encode(rep)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := writeFileAtomic(*out, b); err != nil {
			return err
		}
	} else {
		env.Stdout.Write(b)
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

// replayLive replays the store's chains (only's, or every tenant's) with
// the bundles this binary shipped and those archived in the store.
func replayLive(ctx context.Context, env Env, sc StoreConfig, only tenant.ID, anchors anchorFlags, actions *action.Registry) (*replay.Replayer, error) {
	st, err := openExistingStore(ctx, sc, "exoarmur-replay")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	bundles, err := storedBundles(st, warnCorrupt(env))(ctx)
	if err != nil {
		return nil, err
	}
	rp := replay.NewWith(only.String(), bundles, actions)
	anchored, err := anchors.apply(rp, false)
	if err != nil {
		return nil, err
	}
	log := audit.New(st.Audit)
	tenants := []tenant.ID{only}
	if only.IsZero() {
		if tenants, err = log.Tenants(ctx); err != nil {
			return nil, err
		}
	}
	if anchored {
		for _, t := range tenants {
			if err := requireStored(ctx, st, rp, anchors, t); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range tenants {
		if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
			return nil, err
		}
	}
	return rp, nil
}
