package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// opDoc describes one operation for the OpenAPI document.
type opDoc struct {
	method, path, summary string
	req                   string // a schema name, "image" for a QR image, or ""
	status                int
	resp                  string // a schema name, "png", "events", or "" for none
}

// operations lists every operation the server routes; a test keeps the
// two equal.
var operations = []opDoc{
	{"GET", "/v1/health", "Liveness; needs no token", "", 200, "Health"},
	{"GET", "/v1/status", "The node: peer id, name, addresses, version, counts", "", 200, "Status"},
	{"GET", "/v1/openapi.json", "This document", "", 200, "Any"},
	{"GET", "/v1/realms", "The realms this node holds", "", 200, "RealmList"},
	{"POST", "/v1/realms", "Create a realm with this node as its admin", "NewRealm", 201, "Realm"},
	{"GET", "/v1/realms/{realm}", "One realm, by id or by a name only it has", "", 200, "Realm"},
	{"GET", "/v1/realms/{realm}/members", "A realm's members", "", 200, "MemberList"},
	{"PATCH", "/v1/realms/{realm}/members/{peer}", "Change a member's role (admins only)", "RoleChange", 200, "Member"},
	{"DELETE", "/v1/realms/{realm}/members/{peer}", "Remove a member (admins only); a new key epoch starts", "", 204, ""},
	{"GET", "/v1/realms/{realm}/messages", "Chat messages in the realm's order", "", 200, "MessageList"},
	{"POST", "/v1/realms/{realm}/messages", "Send a chat message", "NewMessage", 201, "Message"},
	{"GET", "/v1/realms/{realm}/objects/{collection}", "The objects of a collection", "", 200, "ObjectList"},
	{"GET", "/v1/realms/{realm}/objects/{collection}/{id}", "One object", "", 200, "Object"},
	{"PUT", "/v1/realms/{realm}/objects/{collection}/{id}", "Set the fields named; the others stay", "Fields", 200, "Object"},
	{"DELETE", "/v1/realms/{realm}/objects/{collection}/{id}", "Delete an object", "", 204, ""},
	{"GET", "/v1/realms/{realm}/invites", "The invites (offers) this node issued", "", 200, "InviteList"},
	{"POST", "/v1/realms/{realm}/invites", "Create an invite", "NewInvite", 201, "Invite"},
	{"DELETE", "/v1/realms/{realm}/invites/{offer}", "Revoke an invite", "", 204, ""},
	{"GET", "/v1/realms/{realm}/invites/{offer}/qr.png", "An invite's QR code", "", 200, "png"},
	{"POST", "/v1/invites/accept", "Join a realm with an invite's token, or the image of its QR code", "Accept", 201, "Realm"},
	{"GET", "/metrics", "Prometheus metrics: the node's, libp2p's, the API's and the Go runtime's", "", 200, "metrics"},
	{"GET", "/v1/realms/{realm}/events", "Server-Sent Events: message (in the order they reach this node; id: the position in that order, resumable with Last-Event-ID, which may also name a message), member, invite, object", "", 200, "events"},
	{"POST", "/v1/session/link", "A one-time sign-in link for the web page (needs the token itself, not a session)", "", 201, "SessionLink"},
	{"DELETE", "/v1/session", "Sign the web page's session out", "", 204, ""},
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// openAPI builds the OpenAPI 3.1 description of the API.
func openAPI() map[string]any {
	ref := func(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }
	jsonBody := func(schema any) map[string]any {
		return map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": schema}}}
	}
	paths := map[string]any{}
	for _, op := range operations {
		o := map[string]any{"summary": op.summary, "operationId": operationID(op)}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if op.method == "GET" && strings.HasSuffix(op.path, "/messages") {
			params = append(params,
				map[string]any{"name": "after", "in": "query", "description": "a message id: list the messages after it", "schema": map[string]any{"type": "string"}},
				map[string]any{"name": "limit", "in": "query", "schema": map[string]any{"type": "integer", "minimum": 1, "maximum": MaxMessages, "default": 100}})
		}
		if strings.HasSuffix(op.path, "/events") {
			params = append(params, map[string]any{"name": "Last-Event-ID", "in": "header", "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			o["parameters"] = params
		}
		switch op.req {
		case "":
		case "Accept":
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": ref("Accept")},
				"image/png":        map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "image/png"}},
				"image/jpeg":       map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "image/jpeg"}},
			}}
		default:
			body := jsonBody(ref(op.req))
			body["required"] = true
			o["requestBody"] = body
		}
		ok := map[string]any{"description": http.StatusText(op.status)}
		switch op.resp {
		case "":
		case "png":
			ok["content"] = map[string]any{"image/png": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "image/png"}}}
		case "metrics":
			ok["content"] = map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}
		case "events":
			ok["content"] = map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}
		case "Any":
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
		default:
			ok["content"] = jsonBody(ref(op.resp))["content"]
		}
		problem := map[string]any{"description": "refused", "content": map[string]any{"application/problem+json": map[string]any{"schema": ref("Problem")}}}
		o["responses"] = map[string]any{strconv.Itoa(op.status): ok, "default": problem}
		if op.path == "/v1/health" {
			o["security"] = []any{}
		}
		item, _ := paths[op.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[op.path] = item
		}
		item[strings.ToLower(op.method)] = o
	}
	str := map[string]any{"type": "string"}
	date := map[string]any{"type": "string", "format": "date-time"}
	integer := map[string]any{"type": "integer"}
	boolean := map[string]any{"type": "boolean"}
	role := map[string]any{"type": "string", "enum": []string{"reader", "writer", "admin"}}
	object := func(required []string, props map[string]any) map[string]any {
		return map[string]any{"type": "object", "required": required, "properties": props}
	}
	list := func(field, item string) map[string]any {
		return object([]string{field}, map[string]any{field: map[string]any{"type": "array", "items": ref(item)}})
	}
	schemas := map[string]any{
		"Health": object([]string{"ok"}, map[string]any{"ok": boolean}),
		"Status": object([]string{"peer_id", "name", "addrs", "version", "realms", "peers"}, map[string]any{
			"peer_id": str, "name": str, "addrs": map[string]any{"type": "array", "items": str},
			"version": str, "realms": integer, "peers": integer}),
		"Realm": object([]string{"id", "name", "role", "members", "messages", "created_at"}, map[string]any{
			"id": str, "name": str, "role": str, "members": integer, "messages": integer, "created_at": date}),
		"RealmList": list("realms", "Realm"),
		"NewRealm":  object([]string{"name"}, map[string]any{"name": str}),
		"Member": object([]string{"peer_id", "name", "role", "online"}, map[string]any{
			"peer_id": str, "name": str, "role": role, "online": boolean}),
		"MemberList": list("members", "Member"),
		"RoleChange": object([]string{"role"}, map[string]any{"role": role}),
		"Message": object([]string{"id", "author", "author_name", "text", "sent_at"}, map[string]any{
			"id": str, "author": str, "author_name": str, "text": str, "sent_at": date}),
		"MessageList": list("messages", "Message"),
		"NewMessage":  object([]string{"text"}, map[string]any{"text": map[string]any{"type": "string", "maxLength": MaxTextSize}}),
		"Object": object([]string{"id", "fields", "updated_at"}, map[string]any{
			"id": str, "fields": map[string]any{"type": "object"}, "updated_at": date}),
		"ObjectList": list("objects", "Object"),
		"Fields":     map[string]any{"type": "object", "minProperties": 1, "description": "field name to any JSON value"},
		"Invite": object([]string{"offer_id", "role", "expires_at", "max_uses", "uses", "revoked"}, map[string]any{
			"offer_id": str, "token": str, "qr_url": str, "role": role, "expires_at": date, "max_uses": integer, "uses": integer, "revoked": boolean}),
		"InviteList": list("invites", "Invite"),
		"NewInvite": object([]string{}, map[string]any{
			"role": role, "expires_in": map[string]any{"type": "string", "default": "24h", "description": "a Go duration, such as 90m or 24h"},
			"max_uses": map[string]any{"type": "integer", "minimum": 1, "maximum": MaxInviteUses, "default": DefaultInviteMaxUses}}),
		"Accept":      object([]string{"token"}, map[string]any{"token": str}),
		"SessionLink": object([]string{"url", "expires_at"}, map[string]any{"url": str, "expires_at": date}),
		"Problem": object([]string{"type", "title", "status", "detail", "code"}, map[string]any{
			"type": str, "title": str, "status": integer, "detail": str, "code": str}),
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "realmsync local API",
			"version":     "1",
			"description": "The daemon's API on a loopback address. Send Authorization: Bearer <the data dir's api-token> with every request but GET /v1/health; the web page sends the cookie of a session that a sign-in link (POST /v1/session/link) started.",
		},
		"servers":  []any{map[string]any{"url": "http://127.0.0.1:7700"}},
		"security": []any{map[string]any{"bearer": []any{}}},
		"paths":    paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         schemas,
		},
	}
}

// operationID names an operation: its method and its path's words.
func operationID(op opDoc) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(op.method))
	for _, part := range strings.FieldsFunc(strings.TrimPrefix(op.path, "/v1/"), func(r rune) bool {
		return r == '/' || r == '{' || r == '}' || r == '.'
	}) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}
