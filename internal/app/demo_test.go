package app

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestDemoGolden: the demo's output equals the golden file, twice in a row,
// each time on a fresh store.
func TestDemoGolden(t *testing.T) {
	golden := filepath.Join("testdata", "demo.golden")
	var first []byte
	for i := range 2 {
		var out bytes.Buffer
		ok, err := Demo(context.Background(), t.TempDir(), &out)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("demo run %d failed:\n%s", i+1, out.String())
		}
		if i == 0 {
			first = out.Bytes()
			continue
		}
		if !bytes.Equal(first, out.Bytes()) {
			t.Fatalf("demo output differs between runs:\n--- run 1\n%s\n--- run 2\n%s", first, out.Bytes())
		}
	}
	if *update {
		if err := os.WriteFile(golden, first, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, want) {
		t.Fatalf("demo output differs from %s (run with -update after an intended change):\n%s", golden, first)
	}
	for _, marker := range []string{"\nDEMO_RESULT=PASS\n", "\nREPLAY_VERDICT=PASS\n", "\nPROOF_HASH="} {
		if !strings.Contains(string(first), marker) {
			t.Fatalf("output lacks %q", strings.TrimSpace(marker))
		}
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), nil, Env{Stdout: &out, Stderr: &errb}); code != 2 || !strings.Contains(errb.String(), "demo") {
		t.Fatalf("Main() = %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"bogus"}, Env{Stdout: &out, Stderr: &errb}); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("Main(bogus) = %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"serve", "--sync", "sometimes"}, Env{Stdout: &out, Stderr: &errb}); code != 2 || !strings.Contains(errb.String(), "--sync") {
		t.Fatalf("Main(serve --sync sometimes) = %d, %q", code, errb.String())
	}
}
