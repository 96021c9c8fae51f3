package lab

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exoarmur/exoarmur/internal/app"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// runServe is the production serve (app.ServeWith) plus --evidence-clock:
// for reproducible evidence runs, the wall clock is replaced by a clock that
// starts at the given time and advances 1 ms per reading, and request IDs by
// a per-node sequence, so the same scenario writes byte-identical audit
// chains on every run.
func runServe(ctx context.Context, env Env, args []string) error {
	var clock, seed string
	return app.ServeWith(ctx, env, args, app.ServeHooks{
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&clock, "evidence-clock", "", "EVIDENCE RUNS ONLY: a fixed start time (RFC 3339) for a stepping clock and sequential request IDs, for byte-identical audit chains")
			fs.StringVar(&seed, "evidence-seed", "", "EVIDENCE RUNS ONLY: derive the keys created over the API from this seed and --node instead of crypto/rand (reproducible evidence; such keys are predictable)")
		},
		Sources: func(c app.ServeConfig, logger *slog.Logger) (app.ServeSources, error) {
			var src app.ServeSources
			if seed != "" {
				logger.Warn("EVIDENCE SEED: keys created over the API are derived from a seed and predictable; for reproducible evidence runs only")
				src.Rand = &lockedReader{r: rand.NewChaCha8(sha256.Sum256([]byte("serve:" + c.Node + ":" + seed)))}
			}
			if clock == "" {
				return src, nil
			}
			start, err := time.Parse(time.RFC3339, clock)
			if err != nil {
				return src, fmt.Errorf("%w: --evidence-clock %q: must be RFC 3339", errUsage, clock)
			}
			// A restarted node continues after the last recorded time, so
			// time never runs backwards in a chain and a claim cut by the
			// restart reads in doubt once its lease lapses, as on a wall
			// clock. The same history gives the same restart time.
			last, err := lastRecorded(ctx, c.Store)
			if err != nil {
				return src, fmt.Errorf("--evidence-clock: read the last recorded time: %w", err)
			}
			if last.After(start) {
				start = last
			}
			logger.Warn("EVIDENCE CLOCK: the wall clock is replaced by a stepping clock; for reproducible evidence runs only", "start", start.UTC())
			sc := app.NewStepClock(start.UTC(), time.Millisecond)
			var n atomic.Int64
			src.Now, src.RequestID = sc.Now, func() string { return fmt.Sprintf("%s-%06d", c.Node, n.Add(1)) }
			return src, nil
		},
	})
}

// lockedReader makes a seeded generator safe for concurrent key creation.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// evidenceEpoch is the creation time of every seeded key.
var evidenceEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// runKeys: keys create, the production one (app.KeysCreate) plus
// --evidence-seed: the key is derived from the seed instead of crypto/rand
// and created at a fixed time, so an evidence run's keys are predictable.
func runKeys(ctx context.Context, env Env, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(env.Stdout, "exoarmur-lab keys create [flags]: exoarmur keys create, plus --evidence-seed (exoarmur-lab keys create -h for its flags)")
		return nil
	}
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("%w: expected: exoarmur-lab keys create [--evidence-seed SEED] (other key commands: exoarmur keys)", errUsage)
	}
	var seed string
	return app.KeysCreate(ctx, env, args[1:], app.KeysHooks{
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&seed, "evidence-seed", "", "EVIDENCE RUNS ONLY: derive the key from this seed instead of crypto/rand (reproducible evidence)")
		},
		Sources: func(env Env) (io.Reader, func() time.Time, error) {
			if seed == "" {
				return nil, nil, nil
			}
			fmt.Fprintln(env.Stderr, "EVIDENCE SEED: this key is derived from a seed and must never be used outside an evidence run")
			return rand.NewChaCha8(sha256.Sum256([]byte(seed))), func() time.Time { return evidenceEpoch }, nil
		},
	})
}

// lastRecorded is the latest time of any tenant's last audit record in the
// store sc names (zero for an empty store).
func lastRecorded(ctx context.Context, sc app.StoreConfig) (time.Time, error) {
	st, err := natsstore.Open(ctx, natsstore.Config{DataDir: sc.DataDir, NATSURL: sc.NATSURL, Name: "exoarmur-lab-clock"})
	if err != nil {
		return time.Time{}, err
	}
	defer st.Close()
	log := audit.New(st.Audit)
	tenants, err := log.Tenants(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, t := range tenants {
		seq, _, err := log.Head(ctx, t)
		if err != nil {
			return time.Time{}, err
		}
		if seq == 0 {
			continue
		}
		if err := log.Scan(ctx, t, seq-1, 1, func(_ []byte, r contract.AuditRecord) error {
			if r.Time.After(last) {
				last = r.Time
			}
			return nil
		}); err != nil {
			return time.Time{}, err
		}
	}
	return last, nil
}
