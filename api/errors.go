package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is a refusal the API reports as problem+json: an HTTP status, a
// stable machine-readable code and a detail for people.
type Error struct {
	Status int
	Code   string
	Detail string
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// Errorf returns an *Error with a formatted detail.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// The codes the API itself gives; a Backend adds those of refused offers
// (see package invite) and its own.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "cross_origin"
	CodeNotFound     = "not_found"
	CodeNotAllowed   = "method_not_allowed"
	CodeTooLarge     = "too_large"
	CodeBadHost      = "bad_host"
	CodeInternal     = "internal"
)

// problem is the body of an error answer (RFC 9457).
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// writeError answers with err as problem+json. An error that is not an
// *Error is a fault of the daemon: it is logged, and the answer says no
// more than that.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Detail: "the daemon failed; see its log"}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(problem{
		Type:   "urn:realmsync:error:" + e.Code,
		Title:  http.StatusText(e.Status),
		Status: e.Status,
		Detail: e.Detail,
		Code:   e.Code,
	})
}
