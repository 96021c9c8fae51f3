package approval

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

func TestStatusAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := Record{Status: StatusApproved, ExpiresAt: t0}
	if r.StatusAt(t0.Add(-time.Second)) != StatusApproved || r.StatusAt(t0) != StatusExpired {
		t.Fatal("expiry")
	}
	r.Status = StatusExecuted
	if r.StatusAt(t0.Add(time.Hour)) != StatusExecuted {
		t.Fatal("an executed approval does not expire")
	}
}

// TestWebhookSignedAndRetried: the message is HMAC-signed, a failing
// receiver is retried a bounded number of times, and Requested never blocks.
func TestWebhookSignedAndRetried(t *testing.T) {
	secret := []byte("s3cret")
	var mu sync.Mutex
	var calls int
	got := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if r.Header.Get(SignatureHeader) != Sign(secret, body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if n < 2 {
			http.Error(w, "try again", 500)
			return
		}
		got <- body
	}))
	defer srv.Close()
	wh := &Webhook{URLs: map[string]string{"acme": srv.URL}, Secret: secret, Backoff: 10 * time.Millisecond}
	start := time.Now()
	wh.Requested(context.Background(), tenant.MustParse("acme"), Record{Tenant: "acme", IntentID: "in_1", Class: "A3", Required: 2})
	wh.Requested(context.Background(), tenant.MustParse("beta"), Record{Tenant: "beta", IntentID: "in_2"}) // no URL: nothing sent
	if time.Since(start) > time.Second {
		t.Fatal("Requested blocked on delivery")
	}
	select {
	case body := <-got:
		var m Message
		if err := json.Unmarshal(body, &m); err != nil || m.IntentID != "in_1" || m.Event != KindRequested || m.Required != 2 {
			t.Fatalf("message = %s", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery after retries")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Fatalf("calls = %d, want 2 (one failure, one success)", calls)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	wh := &Webhook{URLs: map[string]string{"acme": srv.URL}, Secret: []byte("k"), Attempts: 3, Backoff: 5 * time.Millisecond}
	wh.deliver(context.Background(), srv.URL, []byte(`{}`))
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Fatalf("calls = %d, want exactly 3 attempts", calls)
	}
}
