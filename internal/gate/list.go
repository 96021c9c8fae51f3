package gate

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Listing bounds.
const (
	DefaultListLimit = 100
	MaxListLimit     = 500
)

// ListQuery selects a tenant's intents: every field is a filter that is
// off when zero. Intents are listed oldest first (creation time, then ID);
// After is the cursor of the page before (ListPage.Next).
type ListQuery struct {
	State    string    // proposed, blocked, executing, succeeded, failed or in_doubt
	Action   string    // action type
	Proposer string    // principal ID
	Since    time.Time // created at or after
	Until    time.Time // created before
	Limit    int       // 1..MaxListLimit; 0: DefaultListLimit
	After    string    // cursor
}

// ListPage is one page of intents and the cursor of the next ("" when
// this is the last).
type ListPage struct {
	Intents []View `json:"intents"`
	Next    string `json:"next,omitempty"`
}

var listStates = []string{StateProposed, StateBlocked, StateExecuting, StateSucceeded, StateFailed, StateInDoubt}

// cursor is where a page ended: the last intent's creation time and ID.
type cursor struct {
	At time.Time `json:"at"`
	ID string    `json:"id"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c) // plain struct
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.ID == "" {
		return cursor{}, contract.Errorf(contract.CodeInvalid, "query \"cursor\": not a cursor this server returned")
	}
	return c, nil
}

// Validate names the first query field that is wrong (CodeInvalid).
func (q ListQuery) Validate() error {
	switch {
	case q.State != "" && !slices.Contains(listStates, q.State):
		return contract.Errorf(contract.CodeInvalid, "query \"state\": must be one of %s", strings.Join(listStates, ", "))
	case q.Limit < 0 || q.Limit > MaxListLimit:
		return contract.Errorf(contract.CodeInvalid, "query \"limit\": must be between 1 and %d", MaxListLimit)
	case !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until):
		return contract.Errorf(contract.CodeInvalid, "query \"since\": must be before \"until\"")
	case len(q.Action) > 64 || len(q.Proposer) > 128:
		return contract.Errorf(contract.CodeInvalid, "query \"action\" or \"proposer\": too long")
	}
	if q.After != "" {
		if _, err := decodeCursor(q.After); err != nil {
			return err
		}
	}
	return nil
}

// ListIntents returns a page of t's intents matching q, each with its
// state as Get reports it. It reads every intent of the tenant to order
// them (the store keys intents by ID, not by time): fine for the live
// store's size under a retention; an index is for later.
func (g *Gate) ListIntents(ctx context.Context, t tenant.ID, q ListQuery) (ListPage, error) {
	if err := t.Check(); err != nil {
		return ListPage{}, contract.Wrap(contract.CodeInvalidTenant, "a valid tenant is required", err)
	}
	if err := q.Validate(); err != nil {
		return ListPage{}, err
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	var after cursor
	if q.After != "" {
		after, _ = decodeCursor(q.After) // validated above
	}
	keys, err := g.cfg.Intents.Keys(ctx, tenant.IntentKeyFilter(t))
	if err != nil {
		return ListPage{}, storeErr("list intents", err)
	}
	var all []stored
	for _, key := range keys {
		e, err := g.cfg.Intents.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			continue // expired or deleted since the listing
		}
		if err != nil {
			return ListPage{}, storeErr("load intent", err)
		}
		var s stored
		if err := json.Unmarshal(e.Value, &s); err != nil {
			return ListPage{}, fmt.Errorf("list intents: decode %s: %w", key, err)
		}
		in := &s.Intent
		switch {
		case in.Tenant != t.String():
			continue
		case q.Action != "" && in.Action != q.Action, q.Proposer != "" && in.Proposer != q.Proposer:
			continue
		case !q.Since.IsZero() && in.CreatedAt.Before(q.Since), !q.Until.IsZero() && !in.CreatedAt.Before(q.Until):
			continue
		case q.After != "" && !afterCursor(in.CreatedAt, in.ID, after):
			continue
		}
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b stored) int {
		if c := a.Intent.CreatedAt.Compare(b.Intent.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Intent.ID, b.Intent.ID)
	})
	page := ListPage{Intents: []View{}}
	for _, s := range all {
		v, err := g.view(ctx, t, s)
		if err != nil {
			return ListPage{}, err
		}
		if q.State != "" && v.State != q.State {
			continue
		}
		if len(page.Intents) == limit { // one more matches: there is a next page
			last := page.Intents[len(page.Intents)-1].Intent
			page.Next = cursor{At: last.CreatedAt, ID: last.ID}.encode()
			break
		}
		page.Intents = append(page.Intents, v)
	}
	return page, nil
}

// afterCursor reports whether (at, id) comes after the cursor in listing
// order.
func afterCursor(at time.Time, id string, c cursor) bool {
	if cmp := at.Compare(c.At); cmp != 0 {
		return cmp > 0
	}
	return id > c.ID
}
