package main

import (
	"fmt"
	"io"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/realmsync/realmsync/api"
)

func openCommand() *cobra.Command {
	cmd := clientCommand("open", "Open the web page in a browser, signed in by a one-time link",
		"  realmsync open\n  realmsync open --print   # only print the link, to open it elsewhere on this machine",
		cobra.NoArgs, func(cmd *cobra.Command, c *client, _ []string) error {
			var link api.SessionLink
			raw, err := c.call("POST", "/v1/session/link", nil, &link)
			if err != nil {
				return err
			}
			printOnly, _ := cmd.Flags().GetBool("print")
			opened := !printOnly && openBrowser(link.URL) == nil
			show(cmd, raw, func(w io.Writer) {
				if opened {
					fmt.Fprintf(w, "opened %s in the browser (the link works once, for two minutes)\n", link.URL)
				} else {
					fmt.Fprintf(w, "%s\n", link.URL)
				}
			})
			return nil
		})
	cmd.Flags().Bool("print", false, "print the link instead of opening a browser")
	return cmd
}

// openBrowser asks the desktop to open url, without waiting for it.
func openBrowser(url string) error {
	var c *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		c = exec.Command("open", url)
	case "windows":
		c = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		c = exec.Command("xdg-open", url)
	}
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait()
	return nil
}
