package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// client talks to a running daemon's API.
type client struct {
	base  string // http://host:port
	token string
	http  *http.Client
	where string // how the daemon was found, for messages
}

// connect finds the daemon: REALMSYNC_API and REALMSYNC_TOKEN, or the
// api.json and api-token files of the data dir.
func connect(cmd *cobra.Command) (*client, error) {
	c := &client{http: &http.Client{Timeout: 2 * time.Minute}}
	if addr := os.Getenv("REALMSYNC_API"); addr != "" {
		c.base, c.token, c.where = "http://"+strings.TrimPrefix(addr, "http://"), os.Getenv("REALMSYNC_TOKEN"), "REALMSYNC_API="+addr
		return c, nil
	}
	dir, err := dataDir(cmd)
	if err != nil {
		return nil, err
	}
	c.where = "data dir " + dir
	raw, err := os.ReadFile(filepath.Join(dir, apiFile))
	if err != nil {
		return nil, unreachable(fmt.Errorf("no daemon running for %s (start one with: realmsync daemon --data %s)", c.where, dir))
	}
	var info apiInfo
	if err := json.Unmarshal(raw, &info); err != nil || info.Addr == "" {
		return nil, unreachable(fmt.Errorf("%s: unreadable %s", c.where, apiFile))
	}
	token, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		return nil, unreachable(fmt.Errorf("%s: %v", c.where, err))
	}
	c.base, c.token = "http://"+info.Addr, strings.TrimSpace(string(token))
	return c, nil
}

// problem is an error answer of the API.
type problem struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// call sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to drop it). It returns the raw answer too.
func (c *client) call(method, path string, body, out any) ([]byte, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case rawBody:
		rd, ctype = bytes.NewReader(b.data), b.ctype
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd, ctype = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, usage(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, unreachable(fmt.Errorf("no daemon answers at %s (%s): %v", c.base, c.where, rootCause(err)))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, unreachable(fmt.Errorf("reading the answer: %v", err))
	}
	if resp.StatusCode >= 400 {
		var p problem
		if json.Unmarshal(raw, &p) != nil || p.Code == "" {
			return raw, refused(fmt.Errorf("%s %s: %s", method, path, resp.Status))
		}
		return raw, refused(fmt.Errorf("%s (%s)", p.Detail, p.Code))
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, refused(fmt.Errorf("unreadable answer: %v", err))
		}
	}
	return raw, nil
}

// rawBody is a request body sent as it is.
type rawBody struct {
	data  []byte
	ctype string
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }

// jsonOut reports whether --json was given.
func jsonOut(cmd *cobra.Command) bool {
	j, _ := cmd.Flags().GetBool("json")
	return j
}

// show prints the raw JSON answer with --json, else what human prints.
func show(cmd *cobra.Command, raw []byte, human func(w io.Writer)) {
	w := cmd.OutOrStdout()
	if jsonOut(cmd) {
		w.Write(raw)
		if len(raw) > 0 && raw[len(raw)-1] != '\n' {
			fmt.Fprintln(w)
		}
		return
	}
	human(w)
}
