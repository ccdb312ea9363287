package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/realmsync/realmsync/api"
	"github.com/realmsync/realmsync/daemon"
)

// Files in the data dir that clients read.
const (
	apiFile   = "api.json"  // where the API listens; present while it does
	tokenFile = "api-token" // the API's bearer token, mode 0600
)

// apiInfo is the content of api.json.
type apiInfo struct {
	Addr   string `json:"addr"`
	PID    int    `json:"pid"`
	PeerID string `json:"peer_id"`
}

// dataDir returns the data dir: the flag, REALMSYNC_DATA, or the default.
func dataDir(cmd *cobra.Command) (string, error) {
	if d, _ := cmd.Flags().GetString("data"); d != "" {
		return d, nil
	}
	if d := os.Getenv("REALMSYNC_DATA"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "realmsync"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", usage(fmt.Errorf("no data dir: set --data or REALMSYNC_DATA (%v)", err))
	}
	return filepath.Join(home, ".local", "share", "realmsync"), nil
}

// flag returns a string flag (which envFlags has set from its
// environment twin when the command line did not).
func flag(cmd *cobra.Command, name string) string {
	v, _ := cmd.Flags().GetString(name)
	return v
}

func daemonCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node and its local API until stopped",
		Long: `Run the node: keep this device's realms in step with the other members'
nodes, and serve the local API that the other commands use. Ctrl-C or
SIGTERM stops it gracefully. Every flag has an environment twin
(REALMSYNC_API, REALMSYNC_LISTEN, REALMSYNC_NAME, REALMSYNC_MDNS,
REALMSYNC_LOG_LEVEL, REALMSYNC_LOG_FORMAT).`,
		Example: `  realmsync daemon
  realmsync daemon --data ~/rs2 --api 127.0.0.1:7710 --listen /ip4/0.0.0.0/tcp/7711 --name laptop`,
		Args: cobra.NoArgs,
		RunE: runDaemon,
	}
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.String("api", "127.0.0.1:7700", "API address, loopback only; port 0 picks one")
	f.String("listen", "/ip4/0.0.0.0/tcp/7701,/ip4/0.0.0.0/udp/7701/quic-v1", "libp2p listen multiaddrs, comma-separated")
	f.String("name", host, "display name other members see")
	f.String("mdns", "true", "find nodes on the local network (true or false)")
	f.String("log-level", "info", "debug, info, warn or error")
	f.String("log-format", "text", "text or json")
	f.Lookup("mdns").NoOptDefVal = "true"
	return cmd
}

func runDaemon(cmd *cobra.Command, _ []string) error {
	dir, err := dataDir(cmd)
	if err != nil {
		return err
	}
	log, err := newLogger(cmd)
	if err != nil {
		return err
	}
	apiAddr := flag(cmd, "api")
	if err := checkLoopback(apiAddr); err != nil {
		return usage(err)
	}
	mdns := flag(cmd, "mdns")
	if mdns != "true" && mdns != "false" {
		return usage(fmt.Errorf("--mdns must be true or false, not %q", mdns))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return refused(fmt.Errorf("data dir: %w", err))
	}
	token, err := loadToken(dir)
	if err != nil {
		return refused(err)
	}

	daemon.TuneGC()
	reg := prometheus.NewRegistry()
	n, err := daemon.New(daemon.Config{
		Metrics: reg,
		DataDir: dir,
		Listen:  splitList(flag(cmd, "listen")),
		Name:    flag(cmd, "name"),
		MDNS:    mdns == "true",
		Logger:  log,
	})
	if errors.Is(err, daemon.ErrLocked) {
		return refused(fmt.Errorf("data dir %s is in use by another realmsync daemon", dir))
	}
	if err != nil {
		return refused(err)
	}
	defer n.Close()

	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return refused(fmt.Errorf("API address: %w", err))
	}
	// Event streams last until the client leaves; shutting down ends them.
	streams, endStreams := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           api.NewServer(api.NewNodeBackend(n, version()), token, log.With("component", "api"), reg),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return streams },
	}
	srv.RegisterOnShutdown(endStreams)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	info := apiInfo{Addr: ln.Addr().String(), PID: os.Getpid(), PeerID: n.ID().String()}
	if err := writeJSONFile(filepath.Join(dir, apiFile), info, 0o600); err != nil {
		srv.Close()
		return refused(err)
	}
	defer os.Remove(filepath.Join(dir, apiFile))
	log.Info("daemon ready", "api", "http://"+info.Addr, "peer", info.PeerID, "data", dir)
	log.Info("for the web page, run: realmsync open" + dataFlag(cmd))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-served:
		return refused(fmt.Errorf("API server: %w", err))
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Warn("API shutdown", "err", err)
	}
	if err := n.Close(); err != nil {
		return refused(fmt.Errorf("closing the node: %w", err))
	}
	log.Info("stopped")
	return nil
}

func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(flag(cmd, "log-level"))); err != nil {
		return nil, usage(fmt.Errorf("--log-level: %v", err))
	}
	opts := &slog.HandlerOptions{Level: level}
	w := cmd.ErrOrStderr()
	switch f := flag(cmd, "log-format"); f {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usage(fmt.Errorf("--log-format must be text or json, not %q", f))
	}
}

// checkLoopback refuses an API address that is not on loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--api %q: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--api %q: the API listens on a loopback address only (127.0.0.1, ::1)", addr)
	}
	return nil
}

// loadToken reads the API token from the data dir, making one at first.
func loadToken(dir string) (string, error) {
	path := filepath.Join(dir, tokenFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(raw)); t != "" {
			return t, nil
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("API token: %w", err)
	}
	var b [32]byte
	rand.Read(b[:])
	t := base64.RawURLEncoding.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("API token: %w", err)
	}
	return t, nil
}

func writeJSONFile(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// dataFlag is " --data DIR" when the command line or the environment
// chose the data dir, so that a command printed for the user finds it.
func dataFlag(cmd *cobra.Command) string {
	if d := flag(cmd, "data"); d != "" {
		return " --data " + d
	}
	return ""
}
