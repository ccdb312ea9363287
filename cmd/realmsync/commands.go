package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/realmsync/realmsync/api"
	"github.com/realmsync/realmsync/invite"
)

// clientCommand makes a command that talks to the daemon: run gets a
// connected client.
func clientCommand(use, short, example string, args cobra.PositionalArgs, run func(cmd *cobra.Command, c *client, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Example: example, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := connect(cmd)
			if err != nil {
				return err
			}
			return run(cmd, c, a)
		},
	}
}

func statusCommand() *cobra.Command {
	return clientCommand("status", "Show the node: peer id, addresses, realms, peers", "  realmsync status",
		cobra.NoArgs, func(cmd *cobra.Command, c *client, _ []string) error {
			var s api.Status
			raw, err := c.call("GET", "/v1/status", nil, &s)
			if err != nil {
				return err
			}
			show(cmd, raw, func(w io.Writer) {
				fmt.Fprintf(w, "peer id:  %s\nname:     %s\nversion:  %s\nrealms:   %d\npeers:    %d\n", s.PeerID, s.Name, s.Version, s.Realms, s.Peers)
				for _, a := range s.Addrs {
					fmt.Fprintf(w, "address:  %s\n", a)
				}
			})
			return nil
		})
}

func realmCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "realm", Short: "Create, list and show realms"}
	cmd.AddCommand(
		clientCommand("create NAME", "Create a realm with this node as its admin; prints its id",
			"  realmsync realm create kitchen", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *client, args []string) error {
				var r api.Realm
				raw, err := c.call("POST", "/v1/realms", map[string]string{"name": args[0]}, &r)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) { fmt.Fprintln(w, r.ID) })
				return nil
			}),
		clientCommand("list", "List the realms this node holds", "  realmsync realm list", cobra.NoArgs,
			func(cmd *cobra.Command, c *client, _ []string) error {
				var out struct{ Realms []api.Realm }
				raw, err := c.call("GET", "/v1/realms", nil, &out)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tNAME\tROLE\tMEMBERS")
					for _, r := range out.Realms {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.ID, r.Name, orDash(r.Role), r.Members)
					}
					tw.Flush()
				})
				return nil
			}),
		clientCommand("show REALM", "Show one realm", "  realmsync realm show kitchen", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *client, args []string) error {
				var r api.Realm
				raw, err := c.call("GET", "/v1/realms/"+esc(args[0]), nil, &r)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {
					fmt.Fprintf(w, "id:       %s\nname:     %s\nrole:     %s\nmembers:  %d\ncreated:  %s\n",
						r.ID, r.Name, orDash(r.Role), r.Members, r.CreatedAt.Local().Format(time.DateTime))
				})
				return nil
			}),
	)
	return cmd
}

func memberCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "List members, change their roles, remove them"}
	cmd.AddCommand(
		clientCommand("list REALM", "List a realm's members", "  realmsync member list kitchen", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *client, args []string) error {
				var out struct{ Members []api.Member }
				raw, err := c.call("GET", "/v1/realms/"+esc(args[0])+"/members", nil, &out)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "PEER ID\tNAME\tROLE\tONLINE")
					for _, m := range out.Members {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", m.PeerID, m.Name, m.Role, m.Online)
					}
					tw.Flush()
				})
				return nil
			}),
		clientCommand("role REALM PEER_ID ROLE", "Change a member's role (reader, writer or admin)",
			"  realmsync member role kitchen 12D3KooW… reader", cobra.ExactArgs(3),
			func(cmd *cobra.Command, c *client, args []string) error {
				var m api.Member
				raw, err := c.call("PATCH", "/v1/realms/"+esc(args[0])+"/members/"+esc(args[1]), map[string]string{"role": args[2]}, &m)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) { fmt.Fprintf(w, "%s is now %s\n", orDash(m.Name), m.Role) })
				return nil
			}),
		clientCommand("remove REALM PEER_ID", "Remove a member from a realm",
			"  realmsync member remove kitchen 12D3KooW…", cobra.ExactArgs(2),
			func(cmd *cobra.Command, c *client, args []string) error {
				raw, err := c.call("DELETE", "/v1/realms/"+esc(args[0])+"/members/"+esc(args[1]), nil, nil)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {})
				return nil
			}),
	)
	return cmd
}

func sendCommand() *cobra.Command {
	return clientCommand("send REALM TEXT...", "Send a chat message; prints its id",
		`  realmsync send kitchen "dinner at eight?"`, cobra.MinimumNArgs(2),
		func(cmd *cobra.Command, c *client, args []string) error {
			var m api.Message
			raw, err := c.call("POST", "/v1/realms/"+esc(args[0])+"/messages", map[string]string{"text": strings.Join(args[1:], " ")}, &m)
			if err != nil {
				return err
			}
			show(cmd, raw, func(w io.Writer) { fmt.Fprintln(w, m.ID) })
			return nil
		})
}

func messagesCommand() *cobra.Command {
	cmd := clientCommand("messages REALM", "Print a realm's messages, oldest first",
		"  realmsync messages kitchen --limit 20", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *client, args []string) error {
			limit, _ := cmd.Flags().GetInt("limit")
			follow, _ := cmd.Flags().GetBool("follow")
			if limit < 1 {
				return usage(fmt.Errorf("--limit must be at least 1"))
			}
			msgs, err := c.history(args[0], limit)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			print := func(m api.Message) {
				if jsonOut(cmd) {
					raw, _ := json.Marshal(m)
					fmt.Fprintf(w, "%s\n", raw)
					return
				}
				printMessage(w, m)
			}
			if jsonOut(cmd) && !follow {
				raw, _ := json.MarshalIndent(map[string][]api.Message{"messages": msgs}, "", "  ")
				fmt.Fprintf(w, "%s\n", raw)
				return nil
			}
			last := ""
			for _, m := range msgs {
				print(m)
				last = m.ID
			}
			if !follow {
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return c.follow(ctx, args[0], last, print)
		})
	cmd.Flags().Int("limit", 100, "print at most this many of the newest messages")
	cmd.Flags().Bool("follow", false, "keep printing new messages as they arrive (one JSON object a line with --json)")
	return cmd
}

func printMessage(w io.Writer, m api.Message) {
	fmt.Fprintf(w, "%s  %s: %s\n", m.SentAt.Local().Format(time.DateTime), orDash(m.AuthorName), m.Text)
}

func inviteCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "invite", Short: "Create, list, revoke and accept invites (offers)"}
	create := clientCommand("create REALM", "Create an invite; prints its token (and its QR code on a terminal)",
		"  realmsync invite create kitchen --role writer --expires 24h --uses 1 --qr invite.png", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *client, args []string) error {
			role, _ := cmd.Flags().GetString("role")
			expires, _ := cmd.Flags().GetDuration("expires")
			uses, _ := cmd.Flags().GetInt("uses")
			qr, _ := cmd.Flags().GetString("qr")
			var inv api.Invite
			raw, err := c.call("POST", "/v1/realms/"+esc(args[0])+"/invites",
				map[string]any{"role": role, "expires_in": expires.String(), "max_uses": uses}, &inv)
			if err != nil {
				return err
			}
			if qr != "" {
				png, err := c.call("GET", "/v1/realms/"+esc(args[0])+"/invites/"+inv.OfferID+"/qr.png", nil, nil)
				if err != nil {
					return err
				}
				if err := os.WriteFile(qr, png, 0o600); err != nil {
					return refused(err)
				}
			}
			show(cmd, raw, func(w io.Writer) { fmt.Fprintln(w, inv.Token) })
			if f, ok := cmd.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(f.Fd())) && !jsonOut(cmd) {
				if o, err := invite.Parse(inv.Token); err == nil {
					o.QRTerminal(f)
				}
			}
			return nil
		})
	create.Flags().String("role", "writer", "role to grant: reader, writer or admin")
	create.Flags().Duration("expires", 24*time.Hour, "how long the invite can be used")
	create.Flags().Int("uses", 1, "how many people can use it")
	create.Flags().String("qr", "", "also write the QR code to this PNG file")

	accept := clientCommand("accept [TOKEN]", "Join a realm with an invite's token or the image of its QR code; prints the realm id",
		"  realmsync invite accept REALMSYNC-…\n  realmsync invite accept --image invite.png", cobra.MaximumNArgs(1),
		func(cmd *cobra.Command, c *client, args []string) error {
			image, _ := cmd.Flags().GetString("image")
			var body any
			switch {
			case image != "" && len(args) == 0:
				data, err := os.ReadFile(image)
				if err != nil {
					return refused(err)
				}
				ctype := "image/png"
				if ext := strings.ToLower(filepath.Ext(image)); ext == ".jpg" || ext == ".jpeg" {
					ctype = "image/jpeg"
				}
				body = rawBody{data, ctype}
			case image == "" && len(args) == 1:
				body = map[string]string{"token": args[0]}
			default:
				return usage(fmt.Errorf("give the token or --image FILE, one of them"))
			}
			var r api.Realm
			raw, err := c.call("POST", "/v1/invites/accept", body, &r)
			if err != nil {
				return err
			}
			show(cmd, raw, func(w io.Writer) { fmt.Fprintln(w, r.ID) })
			return nil
		})
	accept.Flags().String("image", "", "a PNG or JPEG holding the invite's QR code")

	cmd.AddCommand(create, accept,
		clientCommand("list REALM", "List the invites this node issued for a realm", "  realmsync invite list kitchen", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *client, args []string) error {
				var out struct{ Invites []api.Invite }
				raw, err := c.call("GET", "/v1/realms/"+esc(args[0])+"/invites", nil, &out)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "OFFER ID\tROLE\tUSES\tEXPIRES\tREVOKED")
					for _, i := range out.Invites {
						fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%v\n", i.OfferID, i.Role, i.Uses, i.MaxUses, i.ExpiresAt.Local().Format(time.DateTime), i.Revoked)
					}
					tw.Flush()
				})
				return nil
			}),
		clientCommand("revoke REALM OFFER_ID", "Revoke an invite", "  realmsync invite revoke kitchen 9f2c…", cobra.ExactArgs(2),
			func(cmd *cobra.Command, c *client, args []string) error {
				raw, err := c.call("DELETE", "/v1/realms/"+esc(args[0])+"/invites/"+esc(args[1]), nil, nil)
				if err != nil {
					return err
				}
				show(cmd, raw, func(w io.Writer) {})
				return nil
			}),
	)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
