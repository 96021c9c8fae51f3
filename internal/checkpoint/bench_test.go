package checkpoint_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// BenchmarkAppendWithCheckpoints is the throughput of durable audit
// appends (16 writers, one chain, embedded NATS) without a checkpointer and
// with one signing every N records in the background, as serve runs it:
// the cost of checkpointing (docs/PERFORMANCE.md).
func BenchmarkAppendWithCheckpoints(b *testing.B) {
	for _, every := range []int{0, 1000, 100} {
		name := "off"
		if every > 0 {
			name = "every=" + strconv.Itoa(every)
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: filepath.Join(dir, "data")})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			log := audit.New(st.Audit)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var cps *checkpoint.Checkpointer
			if every > 0 {
				keys, _, err := checkpoint.LoadOrCreate(filepath.Join(dir, "audit-key.json"), seeded(9), t0)
				if err != nil {
					b.Fatal(err)
				}
				cps = checkpoint.New(checkpoint.Config{Audit: log, Keys: keys, Store: checkpoint.NewStore(st.Checkpoints), Every: every, Node: "bench"})
				log.OnAppend(cps.Appended)
				if err := cps.Start(ctx); err != nil {
					b.Fatal(err)
				}
				go cps.Run(ctx)
			}
			acme := tenant.MustParse("acme")
			payload := map[string]string{"intent_id": "in_0123456789abcdef", "note": "a record of ordinary size for the benchmark"}
			b.SetParallelism(8) // 16 writers on 2 processors
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := log.Append(ctx, acme, audit.Entry{Kind: "bench.record", Actor: "key_bench", Time: t0, Payload: payload}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if cps != nil {
				cps.Flush(ctx)
				if cp, ok := cps.Seen(acme); !ok || cp.Seq == 0 {
					b.Fatal("no checkpoint was signed")
				}
			}
		})
	}
}
