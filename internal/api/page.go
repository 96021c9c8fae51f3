package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// Paging of the approval queue and the key list: a page holds at most
// limit items (default DefaultPageLimit, at most MaxPageLimit; a larger or
// malformed limit is a 400 invalid_request) and at most MaxPageBytes of
// items (always at least one), so no page outgrows a client's response
// bound. A page that is not the last carries "next": the cursor to pass
// as ?cursor= for the page after; the last page has no "next". The V1
// response shapes are unchanged otherwise (next is additive), and a V1
// client that ignores next reads the first page.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
	MaxPageBytes     = 4 << 20
)

// pageCursor is where a page ended: the last item's sort key (the time
// only where the list is ordered by time first).
type pageCursor struct {
	At *time.Time `json:"at,omitempty"`
	ID string     `json:"id"`
}

func (c pageCursor) encode() string {
	b, _ := json.Marshal(c) // plain struct
	return base64.RawURLEncoding.EncodeToString(b)
}

// after reports whether the item (at, id) comes after the cursor.
func (c pageCursor) after(at time.Time, id string) bool {
	if c.At != nil {
		if cmp := at.Compare(*c.At); cmp != 0 {
			return cmp > 0
		}
	}
	return id > c.ID
}

// pageQuery reads limit and cursor; timed says whether the list's cursor
// carries a time.
func pageQuery(r *http.Request, timed bool) (limit int, cur *pageCursor, err error) {
	q := r.URL.Query()
	limit = DefaultPageLimit
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if len(v) != 1 || err != nil || n < 1 || n > MaxPageLimit {
			return 0, nil, contract.Errorf(contract.CodeInvalid, "query \"limit\": must be an integer between 1 and %d", MaxPageLimit)
		}
		limit = n
	}
	if v, ok := q["cursor"]; ok {
		var c pageCursor
		b, err := base64.RawURLEncoding.DecodeString(v[0])
		if len(v) != 1 || err != nil || json.Unmarshal(b, &c) != nil || c.ID == "" || (c.At != nil) != timed {
			return 0, nil, contract.Errorf(contract.CodeInvalid, "query \"cursor\": not a cursor this server returned")
		}
		cur = &c
	}
	return limit, cur, nil
}
