package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/realmsync/realmsync/api"
)

// history returns the newest limit messages of a realm, oldest first.
func (c *client) history(realm string, limit int) ([]api.Message, error) {
	var all []api.Message
	for after := ""; ; {
		var page struct{ Messages []api.Message }
		path := fmt.Sprintf("/v1/realms/%s/messages?limit=%d", esc(realm), api.MaxMessages)
		if after != "" {
			path += "&after=" + esc(after)
		}
		if _, err := c.call("GET", path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Messages...)
		if len(all) > limit {
			all = all[len(all)-limit:]
		}
		if len(page.Messages) < api.MaxMessages {
			return all, nil
		}
		after = page.Messages[len(page.Messages)-1].ID
	}
}

// follow calls fn with each message of the realm after the one with id
// last, as they arrive, until ctx ends. A broken stream is opened again,
// resuming where it stopped.
func (c *client) follow(ctx context.Context, realm, last string, fn func(api.Message)) error {
	backoff := 200 * time.Millisecond
	for {
		err := c.stream(ctx, realm, &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var e *exitError
		if asExit(err, &e) && e.code == exitRefused {
			return err // the realm is gone, say
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func asExit(err error, e **exitError) bool {
	x, ok := err.(*exitError)
	if ok {
		*e = x
	}
	return ok
}

// stream reads one event stream, advancing *last.
func (c *client) stream(ctx context.Context, realm string, last *string, fn func(api.Message)) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/realms/"+esc(realm)+"/events", nil)
	if err != nil {
		return usage(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream stays open
	if err != nil {
		return unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		var p problem
		if json.Unmarshal(raw, &p) == nil && p.Code != "" {
			return refused(fmt.Errorf("%s (%s)", p.Detail, p.Code))
		}
		return refused(fmt.Errorf("events: %s", resp.Status))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event, id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "message" {
				var m api.Message
				if json.Unmarshal([]byte(data), &m) == nil {
					fn(m)
				}
			}
			if id != "" {
				*last = id // where a stream opened again resumes
			}
			event, id, data = "", "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	return unreachable(fmt.Errorf("event stream ended: %v", sc.Err()))
}

func chatCommand() *cobra.Command {
	return clientCommand("chat REALM", "Chat: the recent messages, then live ones; each line you type is sent, Ctrl-D leaves",
		"  realmsync chat kitchen", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *client, args []string) error {
			realm := args[0]
			recent, err := c.history(realm, 20)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			last := ""
			for _, m := range recent {
				printMessage(out, m)
				last = m.ID
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- c.follow(ctx, realm, last, func(m api.Message) { printMessage(out, m) })
			}()
			in := bufio.NewScanner(cmd.InOrStdin())
			for in.Scan() {
				text := strings.TrimSpace(in.Text())
				if text == "" {
					continue
				}
				if _, err := c.call("POST", "/v1/realms/"+esc(realm)+"/messages", map[string]string{"text": text}, nil); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "not sent: %v\n", err)
				}
			}
			cancel()
			return <-done
		})
}
