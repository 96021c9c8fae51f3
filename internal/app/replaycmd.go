package app

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// errReplayFailed is returned when the report does not pass (exit 1).
var errReplayFailed = errors.New("replay failed")

func runReplay(ctx context.Context, env Env, args []string) error {
	var sc StoreConfig
	fs := newCommand(env, cmdHelp{
		Name: "replay",
		Args: "[--from-export FILE | --data-dir D | --nats-url U] [--tenant T] [--out FILE]",
		About: "Verifies the audit chains and recomputes every decision, from a JSONL export or the live store (every tenant, or T); " +
			"writes the canonical report (JSON) to stdout or --out and a summary to stderr; exit 1 unless it passes.",
		Example: "replay --from-export acme.jsonl --out report.json",
	})
	sc.register(fs.FlagSet)
	from := fs.String("from-export", "", "replay this JSONL export instead of the live store")
	tname := fs.String("tenant", "", "replay only this tenant")
	out := fs.String("out", "", "write the report here (default stdout)")
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
	var rp *replay.Replayer
	if *from != "" {
		// An export carries records, not bundles: the bundles this
		// binary shipped re-decide them.
		rp = replay.New(only.String())
		f, err := os.Open(*from)
		if err != nil {
			return fmt.Errorf("open export: %w", err)
		}
		defer f.Close()
		if err := rp.ReadJSONL(f); err != nil {
			return err
		}
	} else {
		var err error
		if rp, err = replayLive(ctx, env, sc, only); err != nil {
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
	for _, m := range rep.Mismatches {
		fmt.Fprintf(env.Stderr, "replay: MISMATCH tenant=%s seq=%d kind=%s: %s\n", m.Tenant, m.Seq, m.Kind, m.Reason)
	}
	if !rep.Pass {
		return errReplayFailed
	}
	return nil
}

// replayLive replays the store's chains (only's, or every tenant's) with
// the bundles this binary shipped and those archived in the store.
func replayLive(ctx context.Context, env Env, sc StoreConfig, only tenant.ID) (*replay.Replayer, error) {
	st, err := openExistingStore(ctx, sc, "exoarmur-replay")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	bundles, err := storedBundles(st, warnCorrupt(env))(ctx)
	if err != nil {
		return nil, err
	}
	rp := replay.NewWith(only.String(), bundles, action.Builtin())
	log := audit.New(st.Audit)
	tenants := []tenant.ID{only}
	if only.IsZero() {
		if tenants, err = log.Tenants(ctx); err != nil {
			return nil, err
		}
	}
	for _, t := range tenants {
		if err := log.Scan(ctx, t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
			return nil, err
		}
	}
	return rp, nil
}
