package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/realmsync/realmsync/api/web"
)

// Server serves the API of one Backend.
type Server struct {
	b        Backend
	token    [sha256.Size]byte // the token's hash: compared in constant time
	log      *slog.Logger
	mux      *http.ServeMux
	table    []string // "METHOD /path" of every route
	metrics  *prometheus.Registry
	requests *prometheus.CounterVec
	sessions *sessions // of the web page
}

// NewServer returns a server for b that admits requests bearing token.
// GET /metrics shows what reg holds (the node's metrics, say) with the
// API's own and the Go runtime's added; reg and log may be nil.
func NewServer(b Backend, token string, log *slog.Logger, reg *prometheus.Registry) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{b: b, token: sha256.Sum256([]byte(token)), log: log, mux: http.NewServeMux(), metrics: reg,
		sessions: newSessions()}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "realmsync_api_requests_total", Help: "API requests, by route and status.",
	}, []string{"route", "status"})
	reg.MustRegister(s.requests, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.routes()
	return s
}

// ServeHTTP counts the request, then serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	s.serve(rec, r)
	_, route := s.mux.Handler(r)
	s.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
}

// recorder notes the status of an answer; it passes flushes on, for
// event streams.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serve checks where the request comes from and its token, then routes
// it.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if !loopbackHost(r.Host) {
		s.writeError(w, r, Errorf(http.StatusMisdirectedRequest, CodeBadHost,
			"the API answers to a loopback address only, not %q", r.Host))
		return
	}
	if crossOrigin(r) {
		s.writeError(w, r, Errorf(http.StatusForbidden, CodeForbidden,
			"requests from pages of other origins are refused"))
		return
	}
	if !public(r) && !s.authorized(r) {
		h.Set("WWW-Authenticate", `Bearer realm="realmsync"`)
		s.writeError(w, r, Errorf(http.StatusUnauthorized, CodeUnauthorized,
			"no token or a wrong one: send Authorization: Bearer <the api-token file of the data dir>"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// public reports whether a request needs no token: the health check, and
// the web page's files and sign-in, which hold no data.
func public(r *http.Request) bool {
	return r.URL.Path == "/v1/health" || r.URL.Path == "/signin" || web.Serves(r.URL.Path)
}

// authorized reports whether a request bears the token, or the cookie of
// a web page's session.
func (s *Server) authorized(r *http.Request) bool {
	return s.bearer(r) || s.sessions.valid(r)
}

// bearer reports whether a request bears the token.
func (s *Server) bearer(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}

// loopbackHost reports whether a Host header names this machine by a
// loopback address or "localhost".
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// crossOrigin reports whether a browser sent the request from a page of
// another origin. Clients other than browsers send neither header.
func crossOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return true
	}
	origin := r.Header.Get("Origin")
	return origin != "" && origin != "http://"+r.Host
}

// decodeJSON reads a JSON body of at most MaxBodySize bytes into v,
// refusing unknown fields and anything after the value.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, CodeBadRequest, "send the body as application/json, not %s", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodySize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, CodeBadRequest, "the body holds more than one JSON value")
	}
	return nil
}

// bodyError turns a failure to read a request body into an *Error.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "the body is over %d bytes", tooLarge.Limit)
	}
	return Errorf(http.StatusBadRequest, CodeBadRequest, "malformed body: %v", err)
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// handler adapts a function that returns an error to an http.Handler.
func (s *Server) handler(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// notFound answers for paths no route has.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, "no such path: %s %s", r.Method, r.URL.Path))
}

func badRequest(format string, args ...any) error {
	return Errorf(http.StatusBadRequest, CodeBadRequest, format, args...)
}
