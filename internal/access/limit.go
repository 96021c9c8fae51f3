package access

import (
	"container/list"
	"math"
	"time"
)

// Failed-authentication limiting.
//
// A failure is attributed to a key id when the presented key parses
// (exo_<id>_<secret>) and names a registered key (a wrong secret, a revoked
// or an expired key), and otherwise to its source (missing credentials, a
// malformed key, an unregistered id, an unknown certificate). The rule:
//
//   - Per key id, whatever the source: after KeyFailLimit failures against
//     one registered key id, further attempts with that id are refused
//     (429, without reading the store or hashing) for a backoff that
//     doubles with each further failure (1 s, 2 s, ... up to 15 min). A
//     success resets it; an hour without a failure forgets it. Guessing one
//     key's secret from any number of addresses is limited, and no other key
//     id is affected.
//   - Per source: after FailLimit failures that named no registered key in
//     one minute, the source's attempts that name no registered key are
//     refused (429) for the rest of the minute. A key that parses and names
//     a registered id is still checked, so a valid key from a flooded
//     address authenticates.
//   - Backstop: all failures that named no registered key, from every
//     source, draw on one token bucket (GlobalFailBurst per minute). When it
//     is empty, such attempts are refused from everywhere: rotating
//     addresses with random ids is limited. A valid key is never refused by
//     it (its id is registered).
//
// A missing or malformed key from an exhausted source (or backstop) is
// refused before any check; a well-formed key is looked up (one registry
// read; no hash unless its id is registered) since only the registry knows
// whether its id exists, and answered 429 if it does not.
//
// So a correct key is refused only when its own key id is under attack
// (failures against that very id), never for the failures of other ids or
// of its source. Refused attempts are not counted as failures (a holder
// retrying never extends its own backoff). The state is bounded: the
// per-key and per-source tables are LRUs of at most MaxTracked entries each.
const (
	failWindow          = time.Minute
	defaultFailLimit    = 20
	defaultKeyFailLimit = 5
	defaultGlobalBurst  = 200
	defaultMaxTracked   = 10000
	keyBackoffBase      = time.Second
	keyBackoffCap       = 15 * time.Minute
	keyForget           = time.Hour
)

// lru is a bounded map, least recently touched evicted first.
type lru[V any] struct {
	cap   int
	order *list.List // of *lruItem[V], front = most recent
	by    map[string]*list.Element
}

type lruItem[V any] struct {
	key string
	val V
}

func newLRU[V any](capacity int) *lru[V] {
	return &lru[V]{cap: capacity, order: list.New(), by: map[string]*list.Element{}}
}

// get returns k's value, if present, without touching it.
func (l *lru[V]) get(k string) (V, bool) {
	if e, ok := l.by[k]; ok {
		return e.Value.(*lruItem[V]).val, true
	}
	var zero V
	return zero, false
}

// put stores v under k as the most recent entry, evicting the oldest
// beyond the capacity.
func (l *lru[V]) put(k string, v V) {
	if e, ok := l.by[k]; ok {
		e.Value.(*lruItem[V]).val = v
		l.order.MoveToFront(e)
		return
	}
	l.by[k] = l.order.PushFront(&lruItem[V]{key: k, val: v})
	for l.order.Len() > l.cap {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.by, old.Value.(*lruItem[V]).key)
	}
}

func (l *lru[V]) del(k string) {
	if e, ok := l.by[k]; ok {
		l.order.Remove(e)
		delete(l.by, k)
	}
}

func (l *lru[V]) len() int { return l.order.Len() }

// backoff is one key id's failures.
type backoff struct {
	n     int
	last  time.Time
	until time.Time
}

// window counts a source's failures in a fixed window.
type window struct {
	start time.Time
	n     int
}

// limiter holds the three limits; the caller holds Service.mu.
type limiter struct {
	keyLimit, srcLimit int
	burst              float64
	keys               *lru[backoff]
	srcs               *lru[window]
	tokens             float64
	refilled           time.Time
}

func newLimiter(cfg Config) *limiter {
	return &limiter{keyLimit: cfg.KeyFailLimit, srcLimit: cfg.FailLimit, burst: float64(cfg.GlobalFailBurst),
		keys: newLRU[backoff](cfg.MaxTracked), srcs: newLRU[window](cfg.MaxTracked), tokens: float64(cfg.GlobalFailBurst)}
}

// keyBlocked: how long attempts on key id are still refused (0: not).
func (l *limiter) keyBlocked(id string, now time.Time) time.Duration {
	b, ok := l.keys.get(id)
	if !ok || !b.until.After(now) {
		return 0
	}
	return b.until.Sub(now)
}

func (l *limiter) keyFailed(id string, now time.Time) {
	b, _ := l.keys.get(id)
	if now.Sub(b.last) >= keyForget {
		b = backoff{}
	}
	b.n++
	b.last = now
	if over := b.n - l.keyLimit; over >= 0 {
		d := keyBackoffCap
		if over < 20 {
			d = min(keyBackoffBase<<over, keyBackoffCap)
		}
		b.until = now.Add(d)
	}
	l.keys.put(id, b)
}

func (l *limiter) keySucceeded(id string) { l.keys.del(id) }

// unknownBlocked: how long attempts that name no registered key are still
// refused from src (0: not), by the source's window or the backstop.
func (l *limiter) unknownBlocked(src string, now time.Time) time.Duration {
	var wait time.Duration
	if w, ok := l.srcs.get(src); ok && now.Sub(w.start) < failWindow && w.n >= l.srcLimit {
		wait = w.start.Add(failWindow).Sub(now)
	}
	l.refill(now)
	if l.tokens < 1 {
		perToken := time.Duration(float64(failWindow) / l.burst)
		wait = max(wait, time.Duration((1-l.tokens)*float64(perToken)))
	}
	return wait
}

func (l *limiter) unknownFailed(src string, now time.Time) {
	w, _ := l.srcs.get(src)
	if now.Sub(w.start) >= failWindow {
		w = window{start: now}
	}
	w.n++
	l.srcs.put(src, w)
	l.refill(now)
	l.tokens = math.Max(l.tokens-1, 0)
}

// refill adds the tokens earned since the last refill (burst per window).
func (l *limiter) refill(now time.Time) {
	if l.refilled.IsZero() || now.Before(l.refilled) {
		l.refilled = now
		return
	}
	l.tokens = math.Min(l.burst, l.tokens+l.burst*float64(now.Sub(l.refilled))/float64(failWindow))
	l.refilled = now
}
