package api

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HeartbeatEvery is how often an idle event stream sends a comment line,
// so that the client (and anything between) notices a dead stream.
const HeartbeatEvery = 15 * time.Second

// events serves a realm's Server-Sent Events:
//
//   - "message": a message that became visible on this node (a Message),
//     in the order they did. That is not always the realm's order: a
//     message written elsewhere can arrive after newer ones and sort
//     before them (by sent_at, then id), and a client that shows the
//     realm's order puts it in its place. A message event's id is its
//     position in that order, "@" and a number, so that a client that
//     reconnects with Last-Event-ID gets every message it missed. A
//     Last-Event-ID that names a message instead (as after reading
//     GET messages) gets the messages after it in the realm's order,
//     then what arrives;
//   - "member": the member list changed (the new list, as GET members);
//   - "invite": the invites issued here changed (the new list);
//   - "object": an object changed (an ObjectChange: its new state, or
//     deleted: true); a client that reconnects reads the objects again.
//
// Without Last-Event-ID the stream starts with what arrives from then on.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	realm := r.PathValue("realm")
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("events: the response cannot be flushed")
	}
	_, pos, err := s.b.Arrived(realm, math.MaxUint64, 0)
	if err != nil {
		return err
	}
	var missed []Message // messages after a Last-Event-ID that names one
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		if n, ok := arrivalPos(last); ok {
			pos = min(n, pos)
		} else {
			for after := last; ; {
				page, err := s.b.Messages(realm, after, MaxMessages)
				if err != nil {
					return err
				}
				missed = append(missed, page...)
				if len(page) < MaxMessages {
					break
				}
				after = page[len(page)-1].ID
			}
		}
	}
	members, err := s.b.Members(realm)
	if err != nil {
		return err
	}
	invites, err := s.b.Invites(realm)
	if err != nil {
		return err
	}
	_, objSeq, err := s.b.ObjectChanges(realm, math.MaxUint64)
	if err != nil {
		return err
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()

	heartbeat := time.NewTicker(HeartbeatEvery)
	defer heartbeat.Stop()
	for _, m := range missed {
		writeEvent(w, "message", "", m)
	}
	for {
		changed, err := s.b.Changed(realm)
		if err != nil {
			return nil // the realm is gone; the client sees the stream end
		}
		for {
			msgs, next, err := s.b.Arrived(realm, pos, MaxMessages)
			if err != nil {
				return nil
			}
			if next == pos {
				break
			}
			pos = next
			id := "@" + strconv.FormatUint(pos, 10)
			for i, m := range msgs {
				if i < len(msgs)-1 {
					writeEvent(w, "message", "", m)
				} else {
					writeEvent(w, "message", id, m)
				}
			}
			if len(msgs) == 0 {
				// All of them came and went: the position moves on all
				// the same (an event of an id alone is not dispatched).
				fmt.Fprintf(w, "id: %s\n\n", id)
			}
		}
		if changes, next, err := s.b.ObjectChanges(realm, objSeq); err == nil {
			for _, c := range changes {
				writeEvent(w, "object", "", c)
			}
			objSeq = next
		}
		if now, err := s.b.Members(realm); err == nil && !slices.Equal(now, members) {
			members = now
			writeEvent(w, "member", "", map[string][]Member{"members": nonNil(now)})
		}
		if now, err := s.b.Invites(realm); err == nil && !slices.Equal(now, invites) {
			invites = now
			writeEvent(w, "invite", "", map[string][]Invite{"invites": nonNil(now)})
		}
		flusher.Flush()
		select {
		case <-r.Context().Done():
			return nil
		case <-changed:
		case <-heartbeat.C:
			fmt.Fprint(w, ": heartbeat\n\n")
			flusher.Flush()
		}
	}
}

// arrivalPos parses a message event's id: "@" and a position.
func arrivalPos(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, "@")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil && n != math.MaxUint64
}

// writeEvent writes one event; id may be empty.
func writeEvent(w http.ResponseWriter, event, id string, v any) {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\n", event)
	if id != "" {
		fmt.Fprintf(w, "id: %s\n", id)
	}
	fmt.Fprintf(w, "data: %s\n\n", data)
}
