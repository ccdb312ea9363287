package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequest sends arbitrary bodies (and a few query strings) to every
// route that reads one: whatever comes, the server answers with a status
// below 500, and a refusal is problem+json.
func FuzzRequest(f *testing.F) {
	f.Add(0, `{"name":"x"}`, "")
	f.Add(1, `{"text":"hello"}`, "limit=5&after=m0")
	f.Add(2, `{"role":"admin"}`, "")
	f.Add(3, `{"title":"x","n":[1,2,{"a":null}]}`, "")
	f.Add(4, `{"role":"reader","expires_in":"90m","max_uses":3}`, "")
	f.Add(5, `{"token":"REALMSYNC-AAAA"}`, "")
	f.Add(1, `{"text":"\u0000"}{`, "limit=-1")
	routes := []struct{ method, path string }{
		{"POST", "/v1/realms"},
		{"POST", "/v1/realms/home/messages"},
		{"PATCH", "/v1/realms/home/members/p"},
		{"PUT", "/v1/realms/home/objects/c/o"},
		{"POST", "/v1/realms/home/invites"},
		{"POST", "/v1/invites/accept"},
		{"GET", "/v1/realms/home/messages"},
	}
	srv := NewServer(&fake{}, testToken, nil, nil)
	f.Fuzz(func(t *testing.T, route int, body, query string) {
		if route < 0 {
			route = -route
		}
		rt := routes[route%len(routes)]
		req := httptest.NewRequest(rt.method, "http://127.0.0.1:7700"+rt.path, strings.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%s with %q: %d %s", rt.method, rt.path, query, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("refusal of type %q", rec.Header().Get("Content-Type"))
		}
		if rec.Code == http.StatusOK && rt.method == "GET" && !strings.HasPrefix(rec.Body.String(), "{") {
			t.Fatalf("answer is not JSON: %s", rec.Body)
		}
	})
}
