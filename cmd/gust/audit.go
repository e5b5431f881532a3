package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "audit", summary: "show your workspace's audit log: who called what, newest first", run: withTerm(runAudit)})
}

func runAudit(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("audit", "[--since DUR|TIME] [--token-id ID] [--route R] [--object ID] [--limit N] [--json]",
		"Shows your workspace's audit log (you need the owner role), newest first: time, token, route,\n"+
			"object, status. --since takes a duration (90m, 12h, 7d) or an RFC 3339 time.")
	since := fs.String("since", "", "entries at most this old (90m, 12h, 7d) or since this time (2026-01-02T15:04:05Z)")
	var opts gust.AuditOptions
	fs.StringVar(&opts.TokenID, "token-id", "", "only this token's requests")
	fs.StringVar(&opts.Route, "route", "", `only this route pattern, e.g. /v1/sandboxes/{id}/terminate`)
	fs.StringVar(&opts.Object, "object", "", "only requests about this object id")
	fs.IntVar(&opts.Limit, "limit", 0, "at most this many entries (default: the server's)")
	asJSON := fs.Bool("json", false, "print the entries as JSON")
	if err := noPositional(fs, args, "audit"); err != nil {
		return err
	}
	if *since != "" {
		if tm, err := time.Parse(time.RFC3339, *since); err == nil {
			opts.SinceTime = tm
		} else if d, err := parseDuration(*since); err == nil && d > 0 {
			opts.Since = d
		} else {
			return fmt.Errorf("--since %q: want a duration (90m, 12h, 7d) or an RFC 3339 time (2026-01-02T15:04:05Z)", *since)
		}
	}
	if opts.Limit < 0 {
		return fmt.Errorf("--limit must not be negative")
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	entries, err := c.Audit(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, entries)
	}
	return printAudit(t.out, entries)
}

// printAudit writes the table of `gust audit`, in the server's order (newest first).
func printAudit(w io.Writer, entries []*gust.AuditEntry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTOKEN\tROUTE\tOBJECT\tSTATUS\tERROR")
	for _, e := range entries {
		route := e.Route
		if route == "" {
			route = e.Method
		} else if e.Method != "" && !strings.HasPrefix(route, e.Method+" ") {
			route = e.Method + " " + route
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), orDash(e.TokenID), orDash(route), orDash(e.Object), e.Status, orDash(oneLine(e.Error)))
	}
	return tw.Flush()
}
