package access

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// The audit of failed authentication is aggregated: instead of a record
// per failure (which let anyone grow the system chain without bound), the
// failures and refusals of an interval are one auth.failures record in the
// system chain, with one entry per (source, key id) pair: its counts, the
// reasons, and the first and last time. The record is written by the first
// failure after the interval has passed, by the timer of Start (every
// interval) and by Close (shutdown); a failure is therefore in the chain
// within an interval, or lost with the process if it is killed (-9) before.
// At most MaxAuditEntries pairs are itemized per record; failures of further
// pairs are counted in its overflow fields (attempts and distinct pairs
// seen after the cap, the latter counted only while the interval lasts).
const (
	defaultAuditInterval   = time.Minute
	defaultMaxAuditEntries = 256
)

// FailureReport is the payload of an auth.failures record.
type FailureReport struct {
	From     time.Time      `json:"from"`
	To       time.Time      `json:"to"`
	Failures int            `json:"failures"` // 401s, every pair (overflow included)
	Limited  int            `json:"limited"`  // 429s, every pair (overflow included)
	Entries  []FailureEntry `json:"entries"`
	// OverflowAttempts are the failures and refusals of pairs beyond
	// MaxAuditEntries, counted but not itemized.
	OverflowAttempts int `json:"overflow_attempts,omitempty"`
}

// FailureEntry is one (source, key id) pair of a FailureReport; KeyID is ""
// for credentials that named no key (missing, malformed, a certificate).
type FailureEntry struct {
	Source   string         `json:"source"`
	KeyID    string         `json:"key_id"`
	Failures int            `json:"failures"`
	Limited  int            `json:"limited"`
	Reasons  map[string]int `json:"reasons"`
	First    time.Time      `json:"first"`
	Last     time.Time      `json:"last"`
	Route    string         `json:"route,omitempty"` // the last one
}

type pairKey struct{ source, keyID string }

// failLog accumulates one interval's report; the caller holds Service.mu.
type failLog struct {
	max     int
	report  *FailureReport
	entries map[pairKey]*FailureEntry
}

// note adds an attempt; limited is a 429 (else a 401).
func (f *failLog) note(now time.Time, src, keyID, reason, route string, limited bool) {
	if f.report == nil {
		f.report = &FailureReport{From: now}
		f.entries = map[pairKey]*FailureEntry{}
	}
	r := f.report
	if limited {
		r.Limited++
	} else {
		r.Failures++
	}
	k := pairKey{src, keyID}
	e, ok := f.entries[k]
	if !ok {
		if len(f.entries) >= f.max {
			r.OverflowAttempts++
			return
		}
		e = &FailureEntry{Source: src, KeyID: keyID, Reasons: map[string]int{}, First: now}
		f.entries[k] = e
	}
	if limited {
		e.Limited++
	} else {
		e.Failures++
	}
	e.Reasons[reason]++
	e.Last, e.Route = now, route
}

// due reports whether the pending report's interval has passed.
func (f *failLog) due(now time.Time, interval time.Duration) bool {
	return f.report != nil && now.Sub(f.report.From) >= interval
}

// take returns the pending report (nil if none) and starts a new one.
func (f *failLog) take(now time.Time) *FailureReport {
	r := f.report
	if r == nil {
		return nil
	}
	r.To = now
	for _, e := range f.entries {
		r.Entries = append(r.Entries, *e)
	}
	slices.SortFunc(r.Entries, func(a, b FailureEntry) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.KeyID, b.KeyID))
	})
	f.report, f.entries = nil, nil
	return r
}

// FlushAudit writes the pending auth.failures record now (shutdown, tests);
// nothing if no failure is pending. A record that cannot be written is
// logged and returned.
func (s *Service) FlushAudit(ctx context.Context) error {
	s.mu.Lock()
	r := s.failLog.take(s.cfg.Now())
	rs := s.rateLog.take(s.cfg.RateNow())
	s.mu.Unlock()
	s.writeRateReports(ctx, rs)
	return s.writeReport(ctx, r)
}

func (s *Service) writeReport(ctx context.Context, r *FailureReport) error {
	if r == nil || s.cfg.Audit == nil {
		return nil
	}
	_, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), tenant.System, audit.Entry{
		Kind: KindAuthFailures, Actor: "anonymous", Time: r.To, Payload: r,
	})
	if err != nil {
		s.cfg.Logger.ErrorContext(ctx, "audit failed authentications", "kind", KindAuthFailures, "failures", r.Failures, "limited", r.Limited, "err", err)
	}
	return err
}

// Start runs the timer that writes the pending auth.failures record every
// audit interval, until Close.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		t := time.NewTicker(s.cfg.AuditInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.mu.Lock()
				r := s.failLog.take(s.cfg.Now())
				rs := s.rateLog.take(s.cfg.RateNow())
				s.mu.Unlock()
				_ = s.writeReport(context.Background(), r)
				s.writeRateReports(context.Background(), rs)
			}
		}
	}(s.stop, s.done)
}

// Close stops the timer and writes the pending auth.failures record.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop, s.done = nil, nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return s.FlushAudit(ctx)
}
