package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// failingStream is the audit stream that fails a read after delivering
// after messages.
type failingStream struct {
	audit.Stream
	after int
}

var errStoreLost = errors.New("store lost mid-read")

func (s failingStream) Read(ctx context.Context, subject string, from uint64, fn func(uint64, []byte) error) error {
	n := 0
	return s.Stream.Read(ctx, subject, from, func(seq uint64, data []byte) error {
		if n == s.after {
			return errStoreLost
		}
		n++
		return fn(seq, data)
	})
}

// TestExportStreams: an export of a chain longer than several scan
// batches (512 records) holds every record once, in order, and ends with
// the record count as a trailer; a read that fails after records were
// sent aborts the response, and the client returns an error (with only
// whole records written), never a short export that looks complete; one
// that fails before the first record is a 503 answer.
func TestExportStreams(t *testing.T) {
	f := newFixture(t)
	acme := tenant.MustParse("acme")
	for i := range 1300 {
		if _, err := f.log.Append(t.Context(), acme, audit.Entry{Kind: "test.filler", Actor: "key_test", Payload: map[string]int{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	total, _, err := f.log.Head(t.Context(), acme)
	if err != nil || total < 1300 {
		t.Fatalf("head = %d, %v", total, err)
	}
	c, err := client.New(f.srv.URL, client.WithAPIKey(opKey))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := c.AuditExport(t.Context(), "acme", &buf); err != nil {
		t.Fatalf("export: %v", err)
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	var seq uint64
	for sc.Scan() {
		if contract.IsCheckpointLine(sc.Bytes()) {
			if cp, err := contract.DecodeCheckpoint(sc.Bytes()); err != nil || cp.Seq != seq || seq != total {
				t.Fatalf("checkpoint line after seq %d (head %d): %+v %v", seq, total, cp, err)
			}
			continue
		}
		var r contract.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Seq != seq+1 {
			t.Fatalf("record after seq %d: seq %d, %v", seq, r.Seq, err)
		}
		seq = r.Seq
	}
	if seq != total {
		t.Fatalf("export ends at seq %d, the chain at %d", seq, total)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", f.srv.URL+"/v1/tenants/acme/audit/export", nil)
	req.Header.Set("Authorization", "Bearer "+opKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	_, err = raw.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Trailer.Get(contract.ExportTrailer) != fmt.Sprint(total) {
		t.Fatalf("export trailer %s = %q (%v), want %d", contract.ExportTrailer, resp.Trailer.Get(contract.ExportTrailer), err, total)
	}

	for _, tc := range []struct {
		name  string
		after int
	}{{"after two batches and a part", 1100}, {"after one record", 1}, {"before the first record", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg
			cfg.Audit = audit.New(failingStream{Stream: f.st.Audit, after: tc.after})
			srv := httptest.NewServer(api.New(cfg))
			defer srv.Close()
			c, err := client.New(srv.URL, client.WithAPIKey(opKey))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := c.AuditExport(t.Context(), "acme", &buf)
			if tc.after == 0 {
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Status != 503 || ce.Code != contract.CodeStoreUnavailable || n != 0 {
					t.Fatalf("export failing before the first record = %d, %v; want HTTP 503 store_unavailable", n, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "cut short") {
				t.Fatalf("export failing after %d records = %d bytes, %v; want an error", tc.after, n, err)
			}
			if got := bytes.Count(buf.Bytes(), []byte("\n")); got != tc.after || int64(buf.Len()) != n || !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
				t.Fatalf("export failing after %d records wrote %d lines, %d bytes (n %d)", tc.after, got, buf.Len(), n)
			}
		})
	}
}

// countingStream counts the reads in flight and the most at once; each
// read lingers a little so that unbounded exports would overlap.
type countingStream struct {
	audit.Stream
	mu           sync.Mutex
	now, highest int
}

func (s *countingStream) Read(ctx context.Context, subject string, from uint64, fn func(uint64, []byte) error) error {
	s.mu.Lock()
	s.now++
	s.highest = max(s.highest, s.now)
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.now--; s.mu.Unlock() }()
	time.Sleep(50 * time.Millisecond)
	return s.Stream.Read(ctx, subject, from, fn)
}

// TestExportsAreBounded: however many exports are asked for at once, a
// node streams at most Config.Exports of them; the others wait and then
// complete.
func TestExportsAreBounded(t *testing.T) {
	f := newFixture(t)
	cs := &countingStream{Stream: f.st.Audit}
	cfg := f.cfg
	cfg.Audit, cfg.Exports = audit.New(cs), 2
	srv := httptest.NewServer(api.New(cfg))
	defer srv.Close()
	c, err := client.New(srv.URL, client.WithAPIKey(opKey))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.AuditExport(t.Context(), "acme", io.Discard)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if cs.highest > 2 {
		t.Fatalf("%d exports read the chain at once, want at most 2", cs.highest)
	}
}
