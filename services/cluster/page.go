package cluster

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tandemhci/tandem/services/frontdoor"
)

// Lists are paged: ?limit= items (default and most: maxPage) from
// ?offset=. The body stays a plain JSON array; X-Total-Count tells how
// many there are in all, and a Link header (rel="next") where the next
// page starts.
const maxPage = 1000

// pageBounds reads ?limit= and ?offset=.
func pageBounds(q url.Values) (limit, offset int, err error) {
	limit, offset = maxPage, 0
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxPage {
			return 0, 0, fieldError("limit", fmt.Sprintf("want 1 to %d", maxPage))
		}
	}
	if s := q.Get("offset"); s != "" {
		if offset, err = strconv.Atoi(s); err != nil || offset < 0 {
			return 0, 0, fieldError("offset", "want 0 or more")
		}
	}
	return limit, offset, nil
}

// writePage answers with the page of items the request asks for.
func writePage[T any](w http.ResponseWriter, r *http.Request, items []T) {
	limit, offset, err := pageBounds(r.URL.Query())
	if err != nil {
		apiError(w, err)
		return
	}
	total := len(items)
	start, end := min(offset, total), min(offset+limit, total)
	page := items[start:end]
	if page == nil {
		page = []T{}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if end < total {
		next := *r.URL
		q := next.Query()
		q.Set("offset", strconv.Itoa(end))
		q.Set("limit", strconv.Itoa(limit))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", next.RequestURI()))
	}
	frontdoor.WriteJSON(w, http.StatusOK, page)
}
