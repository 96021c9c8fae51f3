package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>".
const SignatureHeader = "X-ExoArmur-Signature"

// Webhook notifies operators of new approval requests: an HMAC-signed JSON
// POST to a per-tenant URL. Delivery runs in the background with a bounded
// number of attempts and never blocks or fails the gate.
type Webhook struct {
	URLs     map[string]string // tenant -> URL
	Secret   []byte
	Attempts int           // default 3
	Backoff  time.Duration // first retry delay, doubled each time (default 200ms)
	Client   *http.Client  // default: 5 s timeout, no redirects
	Logger   *slog.Logger
}

var _ Notifier = (*Webhook)(nil)

// Message is the webhook body.
type Message struct {
	Event      string    `json:"event"` // "approval.requested"
	Tenant     string    `json:"tenant"`
	IntentID   string    `json:"intent_id"`
	IntentHash string    `json:"intent_hash"`
	Action     string    `json:"action"`
	Class      string    `json:"class"`
	Proposer   string    `json:"proposer"`
	Required   int       `json:"required"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Sign returns the signature header value of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Requested implements Notifier.
func (w *Webhook) Requested(ctx context.Context, t tenant.ID, r Record) {
	url, ok := w.URLs[t.String()]
	if !ok {
		return
	}
	body, _ := json.Marshal(Message{Event: KindRequested, Tenant: r.Tenant, IntentID: r.IntentID, IntentHash: r.IntentHash,
		Action: r.Action, Class: r.Class, Proposer: r.Proposer, Required: r.Required, ExpiresAt: r.ExpiresAt}) // plain struct
	go w.deliver(context.WithoutCancel(ctx), url, body)
}

func (w *Webhook) deliver(ctx context.Context, url string, body []byte) {
	attempts, backoff, client, logger := w.Attempts, w.Backoff, w.Client, w.Logger
	if attempts <= 0 {
		attempts = 3
	}
	if backoff <= 0 {
		backoff = 200 * time.Millisecond
	}
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var lastErr error
	for i := range attempts {
		if i > 0 {
			time.Sleep(backoff)
			backoff *= 2
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			logger.Error("approval webhook: bad URL", "url", url, "err", err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(SignatureHeader, Sign(w.Secret, body))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		lastErr = err
	}
	logger.Warn("approval webhook: delivery failed", "url", url, "attempts", attempts, "err", lastErr)
}
