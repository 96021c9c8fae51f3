package reality

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Sink is the loopback HTTP endpoint the scenario's http.post intents hit:
// it counts side effects (GET /count) so the scenario can prove "exactly
// once" across restarts.
type Sink struct {
	count atomic.Int64
	srv   *http.Server
}

// StartSink listens on addr (loopback) and serves until ctx ends.
func StartSink(ctx context.Context, addr string) (*Sink, error) {
	s := &Sink{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"count": s.count.Load()})
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		s.count.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"received":true}`)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return
		}
	}()
	go func() {
		<-ctx.Done()
		_ = s.srv.Close()
	}()
	return s, nil
}

// Count returns the number of side effects received.
func (s *Sink) Count() int64 { return s.count.Load() }
