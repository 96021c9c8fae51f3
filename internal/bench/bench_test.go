package bench

import "testing"

// BenchmarkReplayVerify measures replay (chain verification and decision
// re-evaluation) per record.
func BenchmarkReplayVerify(b *testing.B) {
	export, err := Chain(20000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := Replay(export); !r.Pass {
			b.Fatal("replay failed")
		}
	}
	b.ReportMetric(float64(20000*b.N)/b.Elapsed().Seconds(), "records/s")
}

func TestChainReplays(t *testing.T) {
	export, err := Chain(100)
	if err != nil {
		t.Fatal(err)
	}
	if r := Replay(export); !r.Pass || r.Records != 100 || r.Decisions != 50 {
		t.Fatalf("replay = %+v", r)
	}
}
