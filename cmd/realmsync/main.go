// Command realmsync is the realmsync daemon and its command-line client.
//
// `realmsync daemon` runs a node and its local API; every other command
// talks to a running daemon through that API. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit statuses, as the contract has them.
const (
	exitOK          = 0
	exitRefused     = 1 // the daemon or the node refused; the reason on stderr
	exitUsage       = 2
	exitUnreachable = 3 // no daemon answers
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError carries an exit status up to run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func refused(err error) error     { return &exitError{exitRefused, err} }
func unreachable(err error) error { return &exitError{exitUnreachable, err} }
func usage(err error) error       { return &exitError{exitUsage, err} }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := rootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "realmsync: %v\n", err)
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitUsage // cobra's own errors are about the command line
}

// version is the module version the binary was built from.
func version() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "devel"
}

func rootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "realmsync",
		Short: "Peer-to-peer CRDT sync, with invites instead of a server",
		Long: `realmsync keeps realms (shared, live data: chats, notes, any objects) in
step between your devices and your friends' over libp2p, with no server.
Run "realmsync daemon" on each device, then invite people with an offer
they accept by token or QR code.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	root.PersistentPreRunE = envFlags
	root.PersistentFlags().String("data", "", "data dir (env REALMSYNC_DATA; default $XDG_DATA_HOME/realmsync or ~/.local/share/realmsync)")
	root.PersistentFlags().Bool("json", false, "print the API's JSON answer")
	root.AddCommand(daemonCommand(), statusCommand(), realmCommand(), memberCommand(),
		sendCommand(), messagesCommand(), chatCommand(), inviteCommand(), openCommand())
	return root
}

// envFlags gives every flag an environment twin: --log-level is
// REALMSYNC_LOG_LEVEL, --data is REALMSYNC_DATA. A flag on the command
// line wins over its twin.
func envFlags(cmd *cobra.Command, _ []string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		name := "REALMSYNC_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := cmd.Flags().Set(f.Name, v); e != nil {
				err = usage(fmt.Errorf("%s=%q: %v", name, v, e))
			}
		}
	})
	return err
}
