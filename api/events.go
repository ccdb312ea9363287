package api

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"
)

// HeartbeatEvery is how often an idle event stream sends a comment line,
// so that the client (and anything between) notices a dead stream.
const HeartbeatEvery = 15 * time.Second

// events serves a realm's Server-Sent Events:
//
//   - "message": a new chat message (a Message); its event id is the
//     message id, so a client that reconnects with Last-Event-ID gets
//     every message after it, in the realm's order;
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
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		// Start after the newest message there is now.
		for after := ""; ; {
			msgs, err := s.b.Messages(realm, after, MaxMessages)
			if err != nil {
				return err
			}
			if len(msgs) == 0 {
				break
			}
			last, after = msgs[len(msgs)-1].ID, msgs[len(msgs)-1].ID
		}
	} else if _, err := s.b.Messages(realm, last, 1); err != nil {
		return err
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
	for {
		changed, err := s.b.Changed(realm)
		if err != nil {
			return nil // the realm is gone; the client sees the stream end
		}
		for {
			msgs, err := s.b.Messages(realm, last, MaxMessages)
			if err != nil {
				return nil
			}
			for _, m := range msgs {
				writeEvent(w, "message", m.ID, m)
				last = m.ID
			}
			if len(msgs) < MaxMessages {
				break
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

// writeEvent writes one event; id may be empty.
func writeEvent(w http.ResponseWriter, event, id string, v any) {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\n", event)
	if id != "" {
		fmt.Fprintf(w, "id: %s\n", id)
	}
	fmt.Fprintf(w, "data: %s\n\n", data)
}
