package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	if len(args) > 0 && args[0] == "export" {
		return runBenchExport(ctx, env, args[1:])
	}
	if len(args) > 0 && args[0] == "soak" {
		return runSoak(ctx, env, args[1:])
	}
	if len(args) > 0 && args[0] == "noisy" {
		return runBenchNoisy(ctx, env, args[1:])
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
	var serveArgs []string
	fs.Func("serve-arg", "pass this flag to the server's serve (repeatable), e.g. --serve-arg=--checkpoint-every=0", func(v string) error {
		if !strings.HasPrefix(v, "-") {
			return fmt.Errorf("a serve flag starts with '-', not %q", v)
		}
		serveArgs = append(serveArgs, v)
		return nil
	})
	replicas := fs.String("replicas", "", `run on a fresh three-server cluster of "exoarmur nats" processes once per replica count, e.g. "1,3", and compare (default: the embedded NATS)`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var counts []int
	if *replicas != "" {
		for _, r := range strings.Split(*replicas, ",") {
			n, err := strconv.Atoi(r)
			if err != nil || n != 1 && n != 3 {
				return fmt.Errorf("%w: --replicas: a list of 1 and 3 (the cluster has three servers), not %q", errUsage, r)
			}
			counts = append(counts, n)
		}
		if *sync != "default" {
			return fmt.Errorf("%w: --sync always applies to the embedded NATS only, not with --replicas", errUsage)
		}
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
		if counts != nil {
			// The cluster's members are `exoarmur nats` processes: the
			// gateway binary beside this one (make build puts both in bin/).
			exe = filepath.Join(filepath.Dir(exe), "exoarmur")
			if _, err := os.Stat(exe); err != nil {
				return fmt.Errorf("%w: --replicas runs `exoarmur nats`: give the exoarmur binary with --bin (%v)", errUsage, err)
			}
		}
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	cfg := bench.Config{Binary: exe, Scenarios: list, Clients: *clients, Duration: *duration, Max: *maxOps, Sync: *sync, Retention: *retention, Log: env.Stdout, ProfileDir: *profile, ServerArgs: serveArgs}
	if counts != nil {
		return benchReplicas(ctx, env, cfg, counts, *jsonOut)
	}
	results, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return writeJSONResults(*jsonOut, results)
}

// writeJSONResults writes v as indented JSON to path, the bench's --json
// ("" writes nothing).
func writeJSONResults(path string, v any) error {
	if path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(v, "", "  ") // results are plain structs
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
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

// benchReplicas runs cfg's scenarios once per replica count, each on a
// fresh three-server cluster, and prints them side by side with each
// count's throughput as a ratio of the first's.
func benchReplicas(ctx context.Context, env Env, cfg bench.Config, counts []int, jsonOut string) error {
	byCount := map[int][]bench.Result{}
	for _, n := range counts {
		fmt.Fprintf(env.Stdout, "-- three-server cluster, R%d\n", n)
		c := cfg
		c.Cluster, c.Replicas, c.ProfileDir = 3, n, ""
		if cfg.ProfileDir != "" {
			c.ProfileDir = filepath.Join(cfg.ProfileDir, fmt.Sprintf("r%d", n))
			if err := os.MkdirAll(c.ProfileDir, 0o755); err != nil {
				return fmt.Errorf("--profile-dir: %w", err)
			}
		}
		res, err := bench.Run(ctx, c)
		if err != nil {
			return fmt.Errorf("at %d replicas: %w", n, err)
		}
		byCount[n] = res
	}
	fmt.Fprintf(env.Stdout, "\n%-8s", "scenario")
	for _, n := range counts {
		fmt.Fprintf(env.Stdout, " %12s %9s", fmt.Sprintf("R%d ops/s", n), "p99")
	}
	fmt.Fprintf(env.Stdout, " %s\n", "ratio to R"+strconv.Itoa(counts[0]))
	for i, sc := range cfg.Scenarios {
		fmt.Fprintf(env.Stdout, "%-8s", sc)
		var ratios []string
		for _, n := range counts {
			r := byCount[n][i]
			fmt.Fprintf(env.Stdout, " %12.0f %7.1fms", r.PerSecond, float64(r.P99us)/1000)
			ratios = append(ratios, fmt.Sprintf("%.2f", r.PerSecond/byCount[counts[0]][i].PerSecond))
		}
		fmt.Fprintf(env.Stdout, " %s\n", strings.Join(ratios, " / "))
	}
	if jsonOut != "" {
		out := map[string][]bench.Result{}
		for n, r := range byCount {
			out[fmt.Sprintf("R%d", n)] = r
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	return nil
}

// runBenchExport: exoarmur-lab bench export [--records N --exports N --rounds N --bin B]:
// concurrent audit exports of one long chain and the server's RSS.
func runBenchExport(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("bench export", env)
	records := fs.Int("records", 20000, "records in the chain (one proposal each, over the API)")
	exports := fs.Int("exports", 20, "concurrent exports")
	rounds := fs.Int("rounds", 3, "rounds of concurrent exports")
	bin := fs.String("bin", "", "server binary (default: this executable, whose serve is the production serve)")
	jsonOut := fs.String("json", "", "also write the result as JSON here")
	profile := fs.String("profile-dir", "", "save a heap profile of the server during the first round here")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	if *records < 1 || *records > 1_000_000 || *exports < 1 || *exports > 200 || *rounds < 1 || *rounds > 100 {
		return fmt.Errorf("%w: --records 1..1000000, --exports 1..200, --rounds 1..100", errUsage)
	}
	exe := *bin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	res, err := bench.Export(ctx, bench.ExportConfig{Binary: exe, Records: *records, Exports: *exports, Rounds: *rounds, Log: env.Stdout, ProfileDir: *profile})
	if err != nil {
		return err
	}
	return writeJSONResults(*jsonOut, res)
}

// runBenchNoisy: exoarmur-lab bench noisy [--duration D --interval I ...]:
// one tenant's decision latency while another floods, on a server with
// its default rate limits and quotas.
func runBenchNoisy(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("bench noisy", env)
	duration := fs.Duration("duration", 10*time.Second, "each phase: beta idle, then beta while acme floods")
	interval := fs.Duration("interval", 20*time.Millisecond, "between beta's propose+execute operations")
	fill := fs.Duration("fill", 5*time.Second, "acme proposes this long first, so its exports and lists read a chain")
	floods := fs.Int("flood-clients", 16, "acme's concurrent proposers during the flood")
	exports := fs.Int("exports", 4, "acme's concurrent audit exports during the flood (the node streams 2 at once)")
	lists := fs.Int("lists", 4, "acme's concurrent intent and audit listings during the flood")
	bin := fs.String("bin", "", "server binary (default: this executable, whose serve is the production serve)")
	jsonOut := fs.String("json", "", "also write the result as JSON here")
	tenantReads := fs.Int("tenant-reads", 0, "the server's --tenant-reads (0: its default)")
	profile := fs.String("profile-dir", "", "save the server's CPU profile of the flood phase (noisy.cpu.pprof) and a heap profile after it here")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	var serverArgs []string
	if *tenantReads > 0 {
		serverArgs = []string{"--tenant-reads", strconv.Itoa(*tenantReads)}
	}
	if *duration <= 0 || *duration > 5*time.Minute || *interval < time.Millisecond || *fill < 0 || *fill > 5*time.Minute ||
		*floods < 0 || *floods > 512 || *exports < 0 || *exports > 64 || *lists < 0 || *lists > 64 {
		return fmt.Errorf("%w: --duration up to 5m, --interval at least 1ms, --fill up to 5m, --flood-clients 0..512, --exports and --lists 0..64", errUsage)
	}
	exe := *bin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	res, err := bench.Noisy(ctx, bench.NoisyConfig{Binary: exe, Duration: *duration, Interval: *interval, Fill: *fill,
		FloodClients: *floods, Exports: *exports, Lists: *lists, ServerArgs: serverArgs, ProfileDir: *profile, Log: env.Stdout})
	if err != nil {
		return err
	}
	return writeJSONResults(*jsonOut, res)
}
