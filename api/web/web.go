// Package web is the daemon's chat page: HTML, CSS and plain JavaScript,
// embedded in the binary and served by the API at its address. There is
// no build step. The page talks to the API like any client, signed in by
// the session cookie of a one-time link (see the api package), and its
// Content-Security-Policy allows scripts, styles and connections to its
// own origin only, with no inline script.
package web

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
)

//go:embed static
var static embed.FS

// files maps each path the page is served at to its file.
var files = map[string]string{
	"/":        "static/index.html",
	"/app.js":  "static/app.js",
	"/app.css": "static/app.css",
}

// Policy is the page's Content-Security-Policy: everything from the page's
// own origin, nothing inline. (The camera's picture reaches the page as a
// stream object, not by a URL, so it needs no source of its own.)
const Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; media-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Paths returns the paths the page is served at, sorted.
func Paths() []string {
	var ps []string
	for p := range files {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Serves reports whether p is one of the page's paths.
func Serves(p string) bool {
	_, ok := files[p]
	return ok
}

// Handler serves the page's files at their paths.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		body, err := fs.ReadFile(static, name)
		if err != nil {
			http.Error(w, "the page is missing from this build", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
		h.Set("Content-Security-Policy", Policy)
		w.Write(body)
	})
}
