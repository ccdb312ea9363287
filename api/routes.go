package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/realmsync/realmsync/api/web"
)

// methods maps an HTTP method to its handler on one path.
type methods map[string]func(w http.ResponseWriter, r *http.Request) error

// route serves path with one handler per method; another method gets a
// 405 that names the ones there are.
func (s *Server) route(path string, m methods) {
	allow := make([]string, 0, len(m))
	for k := range m {
		allow = append(allow, k)
	}
	slices.Sort(allow)
	for _, method := range allow {
		s.table = append(s.table, method+" "+path)
	}
	s.mux.Handle(path, s.handler(func(w http.ResponseWriter, r *http.Request) error {
		fn, ok := m[r.Method]
		if !ok {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			return Errorf(http.StatusMethodNotAllowed, CodeNotAllowed, "%s %s: use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))
		}
		return fn(w, r)
	}))
}

func (s *Server) routes() {
	s.mux.HandleFunc("/", s.notFound)
	s.route("/v1/health", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return nil
	}})
	s.route("/v1/status", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, s.b.Status())
		return nil
	}})
	s.route("/v1/realms", methods{"GET": s.listRealms, "POST": s.createRealm})
	s.route("/v1/realms/{realm}", methods{"GET": s.showRealm})
	s.route("/v1/realms/{realm}/members", methods{"GET": s.listMembers})
	s.route("/v1/realms/{realm}/members/{peer}", methods{"PATCH": s.setRole, "DELETE": s.removeMember})
	s.route("/v1/realms/{realm}/messages", methods{"GET": s.listMessages, "POST": s.send})
	s.route("/v1/realms/{realm}/objects/{collection}", methods{"GET": s.listObjects})
	s.route("/v1/realms/{realm}/objects/{collection}/{id}",
		methods{"GET": s.showObject, "PUT": s.putObject, "DELETE": s.deleteObject})
	s.route("/v1/realms/{realm}/invites", methods{"GET": s.listInvites, "POST": s.createInvite})
	s.route("/v1/realms/{realm}/invites/{offer}", methods{"DELETE": s.revokeInvite})
	s.route("/v1/realms/{realm}/invites/{offer}/qr.png", methods{"GET": s.inviteQR})
	s.route("/v1/invites/accept", methods{"POST": s.accept})
	s.route("/v1/realms/{realm}/events", methods{"GET": s.events})
	s.route("/v1/session/link", methods{"POST": s.sessionLink})
	s.route("/v1/session", methods{"DELETE": s.endSession})
	s.mux.HandleFunc("GET /signin", s.signIn)
	page := web.Handler()
	for _, path := range web.Paths() {
		if path == "/" {
			path = "/{$}"
		}
		s.mux.Handle("GET "+path, page)
	}
	doc, err := json.MarshalIndent(openAPI(), "", "  ")
	if err != nil {
		panic(err) // a map of plain values always encodes
	}
	metrics := promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{})
	s.route("/metrics", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	}})
	s.route("/v1/openapi.json", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
		return nil
	}})
}

func (s *Server) listRealms(w http.ResponseWriter, r *http.Request) error {
	realms, err := s.b.Realms()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Realm{"realms": nonNil(realms)})
	return nil
}

func (s *Server) createRealm(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Name) == "" {
		return badRequest("a realm needs a name")
	}
	realm, err := s.b.CreateRealm(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, realm)
	return nil
}

func (s *Server) showRealm(w http.ResponseWriter, r *http.Request) error {
	realm, err := s.b.Realm(r.PathValue("realm"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, realm)
	return nil
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) error {
	members, err := s.b.Members(r.PathValue("realm"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Member{"members": nonNil(members)})
	return nil
}

func (s *Server) setRole(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Role string `json:"role"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := checkRole(req.Role); err != nil {
		return err
	}
	m, err := s.b.SetRole(r.Context(), r.PathValue("realm"), r.PathValue("peer"), req.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) error {
	if err := s.b.RemoveMember(r.Context(), r.PathValue("realm"), r.PathValue("peer")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// MaxTextSize bounds the text of one chat message, in bytes.
const MaxTextSize = 16 << 10

func (s *Server) send(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Text string `json:"text"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(req.Text) == "":
		return badRequest("a message needs text")
	case len(req.Text) > MaxTextSize:
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "a message holds at most %d bytes of text", MaxTextSize)
	}
	m, err := s.b.Send(r.Context(), r.PathValue("realm"), req.Text)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, m)
	return nil
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) error {
	limit, err := limitParam(r, 100)
	if err != nil {
		return err
	}
	msgs, err := s.b.Messages(r.PathValue("realm"), r.URL.Query().Get("after"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Message{"messages": nonNil(msgs)})
	return nil
}

// limitParam reads the limit query parameter: 1..MaxMessages, def when
// it is absent.
func limitParam(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxMessages {
		return 0, badRequest("limit must be a whole number from 1 to %d, not %q", MaxMessages, v)
	}
	return n, nil
}

func (s *Server) listObjects(w http.ResponseWriter, r *http.Request) error {
	objs, err := s.b.Objects(r.PathValue("realm"), r.PathValue("collection"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Object{"objects": nonNil(objs)})
	return nil
}

func (s *Server) showObject(w http.ResponseWriter, r *http.Request) error {
	o, err := s.b.Object(r.PathValue("realm"), r.PathValue("collection"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (s *Server) putObject(w http.ResponseWriter, r *http.Request) error {
	var fields map[string]json.RawMessage
	if err := decodeJSON(w, r, &fields); err != nil {
		return err
	}
	if len(fields) == 0 {
		return badRequest("name at least one field to set")
	}
	o, err := s.b.PutObject(r.Context(), r.PathValue("realm"), r.PathValue("collection"), r.PathValue("id"), fields)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (s *Server) deleteObject(w http.ResponseWriter, r *http.Request) error {
	if err := s.b.DeleteObject(r.Context(), r.PathValue("realm"), r.PathValue("collection"), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Invite defaults, as the CLI has them.
const (
	DefaultInviteRole    = "writer"
	DefaultInviteExpiry  = 24 * time.Hour
	DefaultInviteMaxUses = 1
	// MaxInviteExpiry and MaxInviteUses bound what an invite may ask for.
	MaxInviteExpiry = 365 * 24 * time.Hour
	MaxInviteUses   = 65535
)

func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Role      string `json:"role"`
		ExpiresIn string `json:"expires_in"`
		MaxUses   *int   `json:"max_uses"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	role, expires, uses := req.Role, DefaultInviteExpiry, DefaultInviteMaxUses
	if role == "" {
		role = DefaultInviteRole
	}
	if err := checkRole(role); err != nil {
		return err
	}
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > MaxInviteExpiry {
			return badRequest("expires_in must be a duration such as \"24h\", above zero and at most %v, not %q", MaxInviteExpiry, req.ExpiresIn)
		}
		expires = d
	}
	if req.MaxUses != nil {
		if *req.MaxUses < 1 || *req.MaxUses > MaxInviteUses {
			return badRequest("max_uses must be from 1 to %d", MaxInviteUses)
		}
		uses = *req.MaxUses
	}
	inv, err := s.b.CreateInvite(r.Context(), r.PathValue("realm"), role, expires, uses)
	if err != nil {
		return err
	}
	inv.QRURL = "/v1/realms/" + url.PathEscape(r.PathValue("realm")) + "/invites/" + inv.OfferID + "/qr.png"
	writeJSON(w, http.StatusCreated, inv)
	return nil
}

func (s *Server) listInvites(w http.ResponseWriter, r *http.Request) error {
	invs, err := s.b.Invites(r.PathValue("realm"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Invite{"invites": nonNil(invs)})
	return nil
}

func (s *Server) revokeInvite(w http.ResponseWriter, r *http.Request) error {
	if err := s.b.RevokeInvite(r.Context(), r.PathValue("realm"), r.PathValue("offer")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) inviteQR(w http.ResponseWriter, r *http.Request) error {
	png, err := s.b.InviteQR(r.PathValue("realm"), r.PathValue("offer"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(png)
	return nil
}

// accept takes {"token"} as JSON, or the image of a QR code as the body.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	var realm Realm
	var err error
	switch {
	case ct == "image/png" || ct == "image/jpeg":
		body, rerr := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxImageSize))
		if rerr != nil {
			return bodyError(rerr)
		}
		realm, err = s.b.AcceptImage(r.Context(), body)
	default:
		var req struct {
			Token string `json:"token"`
		}
		if err := decodeJSON(w, r, &req); err != nil {
			return err
		}
		if strings.TrimSpace(req.Token) == "" {
			return badRequest("send the offer as {\"token\": \"REALMSYNC-…\"}, or its QR code as an image/png or image/jpeg body")
		}
		realm, err = s.b.Accept(r.Context(), req.Token)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, realm)
	return nil
}

func checkRole(role string) error {
	switch role {
	case "reader", "writer", "admin":
		return nil
	}
	return badRequest("role must be reader, writer or admin, not %q", role)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
