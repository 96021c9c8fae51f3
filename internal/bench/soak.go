package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/exoarmur/exoarmur/internal/api/client"
)

// SoakConfig bounds a soak: a fixed rate of governed executions for a
// fixed time, sampled every Interval.
type SoakConfig struct {
	Binary   string
	Rate     int // governed executions per second, across all clients
	Clients  int
	Duration time.Duration
	Interval time.Duration
	// Retention is the server's --retention: with it the live store is
	// bounded; without it every execution adds two keys for good.
	Retention time.Duration
	Log       io.Writer
	// ProfileDir, when set, receives a heap profile of the server at every
	// sample (heap-<n>.pprof), to see what memory growth is made of.
	ProfileDir string
}

// Sample is one interval of a soak.
type Sample struct {
	At         time.Duration `json:"at"`
	Ops        int64         `json:"ops"`
	Errors     int64         `json:"errors"`
	P99us      int64         `json:"p99_us"`
	RSSMB      int64         `json:"rss_mb"`
	HeapMB     int64         `json:"heap_inuse_mb"` // the server's Go heap in use
	Goroutines int64         `json:"goroutines"`
}

// Soak runs the execute scenario at a fixed rate and reports whether
// memory, goroutines and p99 stayed flat: the last interval's RSS and
// goroutines within 1.5x (+16 MB, +16) of the first's, and every p99
// within 2x of the first interval's.
func Soak(ctx context.Context, cfg SoakConfig) ([]Sample, bool, error) {
	dir, err := os.MkdirTemp("", "exoarmur-soak-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(ctx, Config{Binary: cfg.Binary, Sync: "default", Retention: cfg.Retention, Log: cfg.Log, ProfileDir: cfg.ProfileDir}, dir, "")
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = srv.cmd.Process.Kill(); _ = srv.cmd.Wait() }()
	if srv.debug != "" {
		fmt.Fprintf(cfg.Log, "soak: server profiles at %s/debug/pprof/\n", srv.debug)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Clients * 2}
	cl, err := srv.clients(&http.Client{Transport: tr, Timeout: 30 * time.Second})
	if err != nil {
		return nil, false, err
	}
	for _, t := range []string{"", "acme"} {
		if err := setSwitch(ctx, cl["admin"], t, false, "soak"); err != nil {
			return nil, false, err
		}
	}
	var mu sync.Mutex
	hist := hdrhistogram.New(1, 60_000_000, 3)
	var ops, errs atomic.Int64
	deadline := time.Now().Add(cfg.Duration)
	perClient := time.Duration(float64(time.Second) * float64(cfg.Clients) / float64(cfg.Rate))
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(perClient)
			defer tick.Stop()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				<-tick.C
				t0 := time.Now()
				ok := one(ctx, cl["acme"], "acme", fmt.Sprintf("soak-%d-%d", c, i), "execute")
				us := max(time.Since(t0).Microseconds(), 1)
				mu.Lock()
				hist.RecordValue(us)
				mu.Unlock()
				ops.Add(1)
				if !ok {
					errs.Add(1)
				}
			}
		}()
	}
	var samples []Sample
	start := time.Now()
	var lastOps, lastErrs int64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(min(cfg.Interval, time.Until(deadline)))
		mu.Lock()
		p99 := hist.ValueAtQuantile(99)
		hist.Reset()
		mu.Unlock()
		cur, _ := rss(srv.cmd.Process.Pid)
		m := metricValues(ctx, cl["admin"], "go_goroutines", "go_memstats_heap_inuse_bytes")
		s := Sample{At: time.Since(start).Round(time.Second), Ops: ops.Load() - lastOps, Errors: errs.Load() - lastErrs, P99us: p99,
			RSSMB: cur, HeapMB: int64(m[1] / (1 << 20)), Goroutines: int64(m[0])}
		lastOps, lastErrs = ops.Load(), errs.Load()
		fmt.Fprintf(cfg.Log, "soak %6s: %6d ops (%d errors)  p99 %6dus  rss %4d MB  heap in use %4d MB  goroutines %d\n", s.At, s.Ops, s.Errors, s.P99us, s.RSSMB, s.HeapMB, s.Goroutines)
		if srv.debug != "" {
			if err := fetch(srv.debug+"/debug/pprof/heap", filepath.Join(cfg.ProfileDir, fmt.Sprintf("heap-%02d.pprof", len(samples)+1))); err != nil {
				return samples, false, fmt.Errorf("heap profile: %w", err)
			}
		}
		samples = append(samples, s)
	}
	wg.Wait()
	if len(samples) < 2 {
		return samples, false, fmt.Errorf("soak too short: %d samples", len(samples))
	}
	first, last := samples[0], samples[len(samples)-1]
	flat := float64(last.RSSMB) <= 1.5*float64(first.RSSMB)+16 && float64(last.Goroutines) <= 1.5*float64(first.Goroutines)+16
	for _, s := range samples {
		if s.P99us > 2*first.P99us || s.Errors > 0 {
			flat = false
		}
	}
	return samples, flat, nil
}

// metricValues reads gauges from the server's /metrics (-1 if absent).
func metricValues(ctx context.Context, admin *client.Client, names ...string) []float64 {
	out := make([]float64, len(names))
	for i := range out {
		out[i] = -1
	}
	b, err := admin.Metrics(ctx)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		for i, name := range names {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				out[i], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return out
}
