package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

func init() {
	register(&command{name: "whoami", summary: "show the workspace, token and role of your credentials", run: withTerm(runWhoami)})
}

func runWhoami(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("whoami", "[--json]", "Shows the server, profile, workspace, token and role of the credentials in use.")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	if err := noPositional(fs, args, "whoami"); err != nil {
		return err
	}
	c, cfg, err := loadClient()
	if err != nil {
		return err
	}
	w, err := c.Whoami(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, w)
	}
	tw := tabwriter.NewWriter(t.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "server\t%s\n", cfg.ServerURL)
	fmt.Fprintf(tw, "profile\t%s\n", orDash(cfg.Profile))
	fmt.Fprintf(tw, "workspace\t%s (%s)\n", w.WorkspaceName, w.WorkspaceID)
	fmt.Fprintf(tw, "token\t%s\n", orDash(w.TokenID))
	fmt.Fprintf(tw, "role\t%s\n", w.Role)
	if w.Admin {
		fmt.Fprintf(tw, "admin\tyes (operator: manages workspaces)\n")
	}
	return tw.Flush()
}
