package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// NoisyConfig of a noisy-neighbour run: one server with its default rate
// limits and quotas; tenant beta runs a steady stream of propose+execute
// of an A0 read (Interval apart) for Duration with tenant acme quiet
// (idle), then for Duration while acme floods: FloodClients proposing as
// fast as they are answered (their key's rate limit refuses most),
// Exports audit exports and Lists intent and audit listings looping.
type NoisyConfig struct {
	Binary       string
	Duration     time.Duration // each phase
	Interval     time.Duration // between beta's operations
	Fill         time.Duration // acme proposes this long first, to give its reads something to read
	FloodClients int
	Exports      int
	Lists        int
	// ServerArgs are more serve flags (e.g. --tenant-reads 1).
	ServerArgs []string
	// ProfileDir, when set, receives the server's CPU profile of the
	// flood phase (noisy.cpu.pprof).
	ProfileDir string
	Log        io.Writer
}

// NoisyPhase is beta's latencies in one phase, in microseconds.
type NoisyPhase struct {
	Ops         int64 `json:"ops"`
	Errors      int64 `json:"errors"`      // any operation that did not succeed
	Unavailable int64 `json:"unavailable"` // of them, 503 (store_unavailable: a fail-closed answer)
	Blocked     int64 `json:"blocked"`     // of them, 403 blocked (a decision that failed closed)
	Limited     int64 `json:"limited"`     // of them, 429
	ProposeP50  int64 `json:"propose_p50_us"`
	ProposeP99  int64 `json:"propose_p99_us"`
	ExecuteP50  int64 `json:"execute_p50_us"`
	ExecuteP99  int64 `json:"execute_p99_us"`
	ExecuteMax  int64 `json:"execute_max_us"`
}

// NoisyResult of a noisy-neighbour run.
type NoisyResult struct {
	Idle  NoisyPhase `json:"idle"`
	Flood NoisyPhase `json:"flood"`
	// ExecuteP99Ratio is beta's execute p99 during the flood over idle.
	ExecuteP99Ratio float64 `json:"execute_p99_ratio"`
	ProposeP99Ratio float64 `json:"propose_p99_ratio"`
	// What acme did during the flood.
	AcmeProposed    int64 `json:"acme_proposed"`
	AcmeRateLimited int64 `json:"acme_rate_limited"`
	AcmeOtherErrors int64 `json:"acme_other_errors"`
	AcmeExports     int64 `json:"acme_exports"`
	AcmeExportBytes int64 `json:"acme_export_bytes"`
	AcmeLists       int64 `json:"acme_lists"`
	AcmeRecords     int64 `json:"acme_records_before_flood"`
}

// Noisy runs a noisy-neighbour measurement.
func Noisy(ctx context.Context, cfg NoisyConfig) (NoisyResult, error) {
	var res NoisyResult
	dir, err := os.MkdirTemp("", "exoarmur-noisy-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(ctx, Config{Binary: cfg.Binary, Sync: "default", Log: cfg.Log, Limits: true, ServerArgs: cfg.ServerArgs, ProfileDir: cfg.ProfileDir}, dir, "")
	if err != nil {
		return res, err
	}
	defer func() { _ = srv.cmd.Process.Kill(); _ = srv.cmd.Wait() }()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	cl, err := srv.clients(&http.Client{Transport: tr, Timeout: 2 * time.Minute})
	if err != nil {
		return res, err
	}
	for _, t := range []string{"", "acme", "beta"} {
		if err := setSwitch(ctx, cl["admin"], t, false, "bench noisy"); err != nil {
			return res, err
		}
	}
	// Fill: acme's agent and admin propose at their keys' rate limits.
	var seq atomic.Int64
	flood := func(ctx context.Context, c *client.Client, stop time.Time, proposed, limited, other *atomic.Int64) {
		for ctx.Err() == nil && time.Now().Before(stop) {
			_, _, err := c.Propose(ctx, "acme", contract.IntentRequest{Action: action.FSRead, Target: "bench.txt", IdempotencyKey: fmt.Sprintf("noisy-%d", seq.Add(1))})
			var ce *client.Error
			switch {
			case err == nil:
				proposed.Add(1)
			case errors.As(err, &ce) && ce.Status == http.StatusTooManyRequests:
				limited.Add(1)
			case ctx.Err() == nil: // not the end of the flood cutting it
				other.Add(1)
			}
		}
	}
	var fp, fl, fo atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(cfg.Fill)
	for _, who := range []string{"acme", "admin"} {
		wg.Go(func() { flood(ctx, cl[who], stop, &fp, &fl, &fo) })
	}
	wg.Wait()
	res.AcmeRecords = fp.Load()
	fmt.Fprintf(cfg.Log, "fill: acme proposed %d (%d rate limited)\n", fp.Load(), fl.Load())

	res.Idle = steady(ctx, cl["beta"], cfg, "idle")
	fmt.Fprintf(cfg.Log, "idle:  beta %s\n", res.Idle)

	fctx, cancel := context.WithCancel(ctx)
	stop = time.Now().Add(cfg.Duration + 2*time.Second) // the flood outlasts beta's phase
	var proposed, limited, other, exports, exportBytes, lists atomic.Int64
	for range cfg.FloodClients {
		wg.Go(func() { flood(fctx, cl["acme"], stop, &proposed, &limited, &other) })
	}
	for range cfg.Exports {
		wg.Go(func() {
			for fctx.Err() == nil && time.Now().Before(stop) {
				// The tenant's whole audit is an auditor's (or an operator's) to read.
				n, err := cl["acme-auditor"].AuditExport(fctx, "acme", io.Discard)
				if err == nil {
					exports.Add(1)
					exportBytes.Add(n)
				} else if fctx.Err() == nil {
					other.Add(1)
				}
			}
		})
	}
	for i := range cfg.Lists {
		wg.Go(func() {
			for fctx.Err() == nil && time.Now().Before(stop) {
				var err error
				if i%2 == 0 {
					_, err = cl["acme-auditor"].ListIntents(fctx, "acme", client.ListQuery{Limit: 500})
				} else {
					_, err = cl["acme-auditor"].AuditPage(fctx, "acme", 0, 1000)
				}
				if err == nil {
					lists.Add(1)
				} else if fctx.Err() == nil {
					other.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Second) // the flood is under way
	prof := srv.startProfile(Config{Duration: cfg.Duration, ProfileDir: cfg.ProfileDir}, "noisy")
	res.Flood = steady(ctx, cl["beta"], cfg, "flood")
	if err := prof(); err != nil {
		cancel()
		wg.Wait()
		return res, err
	}
	cancel()
	wg.Wait()
	fmt.Fprintf(cfg.Log, "flood: beta %s\n", res.Flood)
	res.AcmeProposed, res.AcmeRateLimited, res.AcmeOtherErrors = proposed.Load(), limited.Load(), other.Load()
	res.AcmeExports, res.AcmeExportBytes, res.AcmeLists = exports.Load(), exportBytes.Load(), lists.Load()
	if res.Idle.ExecuteP99 > 0 {
		res.ExecuteP99Ratio = float64(res.Flood.ExecuteP99) / float64(res.Idle.ExecuteP99)
	}
	if res.Idle.ProposeP99 > 0 {
		res.ProposeP99Ratio = float64(res.Flood.ProposeP99) / float64(res.Idle.ProposeP99)
	}
	fmt.Fprintf(cfg.Log, "acme during the flood: %d proposed, %d rate limited, %d other errors, %d exports (%d MB), %d lists\n",
		res.AcmeProposed, res.AcmeRateLimited, res.AcmeOtherErrors, res.AcmeExports, res.AcmeExportBytes>>20, res.AcmeLists)
	fmt.Fprintf(cfg.Log, "beta p99 flood/idle: execute %.2fx, propose %.2fx\n", res.ExecuteP99Ratio, res.ProposeP99Ratio)
	return res, nil
}

func (p NoisyPhase) String() string {
	return fmt.Sprintf("%d ops, propose p50 %dus p99 %dus, execute p50 %dus p99 %dus max %dus, errors %d (503 %d, blocked %d, 429 %d)",
		p.Ops, p.ProposeP50, p.ProposeP99, p.ExecuteP50, p.ExecuteP99, p.ExecuteMax, p.Errors, p.Unavailable, p.Blocked, p.Limited)
}

// steady runs beta's propose+execute of an A0 read every cfg.Interval for
// cfg.Duration and returns its latencies.
func steady(ctx context.Context, c *client.Client, cfg NoisyConfig, phase string) NoisyPhase {
	var p NoisyPhase
	hp, he := hdrhistogram.New(1, 120_000_000, 3), hdrhistogram.New(1, 120_000_000, 3)
	note := func(err error) {
		p.Errors++
		var ce *client.Error
		if errors.As(err, &ce) {
			switch {
			case ce.Status == http.StatusServiceUnavailable:
				p.Unavailable++
			case ce.Status == http.StatusForbidden:
				p.Blocked++
			case ce.Status == http.StatusTooManyRequests:
				p.Limited++
			}
		}
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for i, stop := 0, time.Now().Add(cfg.Duration); ctx.Err() == nil && time.Now().Before(stop); i++ {
		<-tick.C
		p.Ops++
		t0 := time.Now()
		v, _, err := c.Propose(ctx, "beta", contract.IntentRequest{Action: action.FSRead, Target: "bench.txt", IdempotencyKey: fmt.Sprintf("steady-%s-%d", phase, i)})
		hp.RecordValue(max(time.Since(t0).Microseconds(), 1))
		if err != nil {
			note(err)
			continue
		}
		t1 := time.Now()
		_, err = c.Execute(ctx, "beta", v.Intent.ID)
		he.RecordValue(max(time.Since(t1).Microseconds(), 1))
		if err != nil {
			note(err)
		}
	}
	p.ProposeP50, p.ProposeP99 = hp.ValueAtQuantile(50), hp.ValueAtQuantile(99)
	p.ExecuteP50, p.ExecuteP99, p.ExecuteMax = he.ValueAtQuantile(50), he.ValueAtQuantile(99), he.Max()
	return p
}
