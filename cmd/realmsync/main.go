// Command realmsync is the realmsync daemon and its command-line client.
//
// This build carries the realm engine and its storage; the daemon, offers
// and API arrive with their issues, and until then every command prints
// this help.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `realmsync: peer-to-peer CRDT sync, with invites instead of a server.

Usage:
  realmsync daemon [--data DIR] [--api ADDR] [--listen MULTIADDR,...] [--name NAME]
  realmsync realm create NAME
  realmsync invite create REALM [--role ROLE] [--expires DURATION] [--uses N]
  realmsync invite accept TOKEN
  realmsync send REALM TEXT...
  realmsync chat REALM

This build has the realm engine (package crdt) and its on-disk store
(package daemon/store) only; the node, the offers and the API are not
built yet, so no command runs. See README.md.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprint(stderr, usage)
	fmt.Fprintf(stderr, "\nrealmsync %s: not available in this build\n", args[0])
	return 2
}
