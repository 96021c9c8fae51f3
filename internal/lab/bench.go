package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/bench"
)

// runBench: exoarmur-lab bench [flags] | bench replay [--records N] | bench soak [flags].
func runBench(ctx context.Context, env Env, args []string) error {
	if len(args) > 0 && args[0] == "replay" {
		fs := newFlagSet("bench replay", env)
		n := fs.Int("records", 100000, "records in the generated chain")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *n < 2 || *n > 10_000_000 {
			return fmt.Errorf("%w: --records: 2..10000000", errUsage)
		}
		export, err := bench.Chain(*n)
		if err != nil {
			return err
		}
		res := bench.Replay(export)
		fmt.Fprintf(env.Stdout, "replay: %d records (%d decisions re-decided) in %.3fs: %.0f records/s, pass=%t\n",
			res.Records, res.Decisions, res.Seconds, res.PerSecond, res.Pass)
		if !res.Pass {
			return fmt.Errorf("the generated chain did not replay")
		}
		return nil
	}
	if len(args) > 0 && args[0] == "soak" {
		return runSoak(ctx, env, args[1:])
	}
	fs := newFlagSet("bench", env)
	scenarios := fs.String("scenarios", strings.Join(bench.Scenarios, ","), "comma-separated: "+strings.Join(bench.Scenarios, ", "))
	clients := fs.Int("clients", 64, "concurrent keep-alive clients")
	duration := fs.Duration("duration", 10*time.Second, "time bound per scenario")
	maxOps := fs.Int64("max", 1_000_000, "operation bound per scenario")
	sync := fs.String("sync", "default", `server durability mode: "default" or "always"`)
	jsonOut := fs.String("json", "", "also write the results as JSON here")
	bin := fs.String("bin", "", "server binary (default: this executable, whose serve is the production serve)")
	profile := fs.String("profile-dir", "", "save the server's CPU and heap profile of each scenario in this directory")
	retention := fs.Duration("retention", 0, "the server's --retention (0: keep every intent and claim)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !validRetention(*retention) {
		return fmt.Errorf("%w: --retention must be 0 or at least 1s", errUsage)
	}
	var list []string
	for _, s := range strings.Split(*scenarios, ",") {
		if !slices.Contains(bench.Scenarios, s) {
			return fmt.Errorf("%w: --scenarios: unknown %q", errUsage, s)
		}
		list = append(list, s)
	}
	if *clients < 1 || *clients > 4096 || *duration <= 0 || *duration > 10*time.Minute || *maxOps < 1 {
		return fmt.Errorf("%w: --clients 1..4096, --duration up to 10m, --max >= 1", errUsage)
	}
	if *sync != "default" && *sync != "always" {
		return fmt.Errorf("%w: --sync: default or always", errUsage)
	}
	exe := *bin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	results, err := bench.Run(ctx, bench.Config{Binary: exe, Scenarios: list, Clients: *clients, Duration: *duration, Max: *maxOps, Sync: *sync, Retention: *retention, Log: env.Stdout, ProfileDir: *profile})
	if err != nil {
		return err
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	return nil
}

// runSoak: exoarmur-lab bench soak [--rate N --clients N --duration 10m].
func runSoak(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("bench soak", env)
	rate := fs.Int("rate", 500, "governed executions per second (half the measured maximum is the usual choice)")
	clients := fs.Int("clients", 32, "concurrent keep-alive clients")
	duration := fs.Duration("duration", 10*time.Minute, "soak length (at most 10m)")
	interval := fs.Duration("interval", time.Minute, "sampling interval")
	profile := fs.String("profile-dir", "", "save a heap profile of the server at every sample in this directory")
	jsonOut := fs.String("json", "", "also write the samples as JSON here")
	retention := fs.Duration("retention", 0, "the server's --retention (0: keep every intent and claim, so the live store grows with every execution)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	if !validRetention(*retention) {
		return fmt.Errorf("%w: --retention must be 0 or at least 1s", errUsage)
	}
	if *rate < 1 || *clients < 1 || *duration <= 0 || *duration > 10*time.Minute || *interval <= 0 {
		return fmt.Errorf("%w: --rate >= 1, --clients >= 1, 0 < --duration <= 10m, --interval > 0", errUsage)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	samples, flat, err := bench.Soak(ctx, bench.SoakConfig{Binary: exe, Rate: *rate, Clients: *clients, Duration: *duration, Interval: *interval, Retention: *retention, Log: env.Stdout, ProfileDir: *profile})
	if err != nil {
		return err
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(map[string]any{"rate": *rate, "clients": *clients, "retention": retention.String(), "flat": flat, "samples": samples}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	if !flat {
		return fmt.Errorf("soak: memory, goroutines or p99 did not stay flat, or requests failed")
	}
	fmt.Fprintln(env.Stdout, "soak: flat (RSS and goroutines within 1.5x of the first interval, every p99 within 2x, no errors)")
	return nil
}
