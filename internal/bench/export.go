package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ExportConfig of an export load run: one tenant's chain filled with at
// least Records records through the API, then Rounds rounds of Exports
// concurrent audit exports of it, while the server's RSS is sampled.
type ExportConfig struct {
	Binary  string
	Records int
	Exports int
	Rounds  int
	Log     io.Writer
	// ProfileDir, when set, receives a heap profile of the server taken
	// while the first round of exports runs (export.heap.pprof).
	ProfileDir string
}

// ExportResult of an export load run. RSS figures are the server
// process's, in MB: before the exports, the largest sample during them
// (every 20 ms), VmHWM over the exports (the peak is reset before them
// where the kernel allows it: PeakReset), and after.
type ExportResult struct {
	Records     int64   `json:"records"`
	ExportBytes int64   `json:"export_bytes"`
	Exports     int     `json:"exports"`
	Rounds      int     `json:"rounds"`
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	RSSBefore   int64   `json:"rss_before_mb"`
	RSSMax      int64   `json:"rss_max_sampled_mb"`
	HWM         int64   `json:"hwm_mb"`
	PeakReset   bool    `json:"peak_reset"`
	RSSAfter    int64   `json:"rss_after_mb"`
}

// Export starts a server, fills acme's chain and runs the exports.
func Export(ctx context.Context, cfg ExportConfig) (ExportResult, error) {
	dir, err := os.MkdirTemp("", "exoarmur-export-")
	if err != nil {
		return ExportResult{}, err
	}
	defer os.RemoveAll(dir)
	lc := Config{Binary: cfg.Binary, Sync: "default", Clients: 32, Duration: 10 * time.Minute, Max: int64(cfg.Records), Log: cfg.Log, ProfileDir: cfg.ProfileDir}
	srv, err := startServer(ctx, lc, dir, "")
	if err != nil {
		return ExportResult{}, err
	}
	defer func() { _ = srv.cmd.Process.Kill(); _ = srv.cmd.Wait() }()
	pid := srv.cmd.Process.Pid
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	cl, err := srv.clients(&http.Client{Transport: tr, Timeout: 5 * time.Minute})
	if err != nil {
		return ExportResult{}, err
	}
	if err := setSwitch(ctx, cl["admin"], "", false, "bench export"); err != nil {
		return ExportResult{}, err
	}
	if err := setSwitch(ctx, cl["admin"], "acme", false, "bench export"); err != nil {
		return ExportResult{}, err
	}
	// Each proposal of an A0 read is one record (intent.proposed).
	fill, err := runScenario(ctx, lc, cl, "propose")
	if err != nil {
		return ExportResult{}, err
	}
	if fill.Errors > 0 {
		return ExportResult{}, fmt.Errorf("filling the chain: %d of %d proposals failed", fill.Errors, fill.Ops)
	}
	var res ExportResult
	res.Exports, res.Rounds = cfg.Exports, cfg.Rounds
	time.Sleep(2 * time.Second) // the fill's garbage collected before "before"
	res.PeakReset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	res.RSSBefore, _ = rss(pid)
	stop := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var top int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				sampled <- top
				return
			case <-t.C:
				if cur, _ := rss(pid); cur > top {
					top = cur
				}
			}
		}
	}()
	start := time.Now()
	var mu sync.Mutex
	sizes := map[int64]int{}
	for round := range cfg.Rounds {
		var wg sync.WaitGroup
		if round == 0 && srv.debug != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Second)
				if err := fetch(srv.debug+"/debug/pprof/heap", filepath.Join(cfg.ProfileDir, "export.heap.pprof")); err != nil {
					fmt.Fprintf(cfg.Log, "heap profile: %v\n", err)
				}
			}()
		}
		for range cfg.Exports {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := cl["admin"].AuditExport(ctx, "acme", io.Discard) // the tenant's whole audit: not its agent's
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.Failed++
					fmt.Fprintf(cfg.Log, "export: %v\n", err)
					return
				}
				sizes[n]++
			}()
		}
		wg.Wait()
	}
	res.Seconds = time.Since(start).Seconds()
	close(stop)
	res.RSSMax = <-sampled
	res.RSSAfter, res.HWM = rss(pid)
	for n := range sizes {
		res.ExportBytes = max(res.ExportBytes, n)
	}
	if len(sizes) > 1 {
		return res, fmt.Errorf("the exports differ in length: %v", sizes)
	}
	// The chain's length: the last record's sequence number.
	page, err := cl["admin"].AuditPage(ctx, "acme", uint64(max(fill.Ops-5, 0)), 1000)
	if err == nil {
		if recs, err := page.Decode(); err == nil && len(recs) > 0 {
			res.Records = int64(recs[len(recs)-1].Seq)
		}
	}
	fmt.Fprintf(cfg.Log, "export: %d records (%d MB a copy), %d rounds of %d concurrent exports in %.1fs, %d failed; server RSS %d MB before, %d MB max sampled during, VmHWM %d MB (peak reset: %t), %d MB after\n",
		res.Records, res.ExportBytes>>20, res.Rounds, res.Exports, res.Seconds, res.Failed, res.RSSBefore, res.RSSMax, res.HWM, res.PeakReset, res.RSSAfter)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d exports failed", res.Failed)
	}
	return res, nil
}
