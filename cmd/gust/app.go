package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "app list", summary: "list apps with their state, functions and containers", run: runAppList})
	register(&command{name: "app show", summary: "show an app's functions: inputs, containers, autoscaler", run: runAppShow})
	register(&command{name: "app stop", summary: "stop an app's functions (pending inputs end terminated)", run: runAppStop})
	register(&command{name: "app logs", summary: "print (or follow) the output of an app's functions", run: runAppLogs})
}

func runAppList(ctx context.Context, args []string) error {
	fs := cliFlags("app list", "", "Lists apps: deployed, ephemeral (`gust run`) and stopped ones.")
	if pos, _, err := parseArgs(fs, args, -1); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("app list takes no arguments, got %q", pos)
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	apps, err := c.ListApps(ctx)
	if err != nil {
		return err
	}
	return printApps(os.Stdout, apps, time.Now())
}

// printApps writes the table of `gust app list`, newest first.
func printApps(w io.Writer, apps []*gust.App, now time.Time) error {
	apps = append([]*gust.App(nil), apps...)
	sort.SliceStable(apps, func(i, j int) bool { return apps[i].CreatedAt.After(apps[j].CreatedAt) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP ID\tNAME\tSTATE\tFUNCTIONS\tCONTAINERS\tCREATED")
	for _, a := range apps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", a.ID, a.Name, orDash(a.State), a.FunctionCount, a.ContainerCount, ago(now, a.CreatedAt))
	}
	return tw.Flush()
}

func runAppShow(ctx context.Context, args []string) error {
	fs := cliFlags("app show", "APP", "Shows an app (a name or an ap-... id) and each of its functions: inputs waiting and\nrunning, containers (idle ones apart), and why the autoscaler chose that many.")
	c, appID, err := appArg(ctx, fs, args, "app show")
	if err != nil {
		return err
	}
	a, err := c.GetApp(ctx, appID)
	if err != nil {
		return err
	}
	return printApp(os.Stdout, a, time.Now())
}

// printApp writes the report of `gust app show`.
func printApp(w io.Writer, a *gust.App, now time.Time) error {
	fmt.Fprintf(w, "app %s (%s), %s, created %s\n", a.Name, a.ID, orDash(a.State), ago(now, a.CreatedAt))
	if len(a.Functions) == 0 {
		fmt.Fprintln(w, "no functions")
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tID\tMODE\tSTATE\tPENDING\tRUNNING\tCONTAINERS\tIDLE\tAUTOSCALER")
	for _, f := range a.Functions {
		name := f.Name
		if f.Kind == "class" && len(f.Methods) > 0 {
			methods := make([]string, 0, len(f.Methods))
			for m := range f.Methods {
				methods = append(methods, m)
			}
			sort.Strings(methods)
			name += " (" + strings.Join(methods, ", ") + ")"
		}
		s := f.Stats
		containers := strconv.Itoa(s.Containers)
		if s.Starting > 0 {
			containers += fmt.Sprintf(" (%d starting)", s.Starting)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", name, f.ID, orDash(f.Mode), orDash(f.State),
			s.Pending, s.Running, containers, s.IdleContainers, orDash(oneLine(s.Reason)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	header := false
	for _, f := range a.Functions {
		if f.WebURL == "" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nweb endpoints:")
			header = true
		}
		fmt.Fprintf(w, "  %s => %s\n", f.Name, f.WebURL)
	}
	return nil
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func runAppStop(ctx context.Context, args []string) error {
	fs := cliFlags("app stop", "APP", "Stops every function of an app (a name or an ap-... id): its containers go and its\npending inputs end terminated.")
	c, appID, err := appArg(ctx, fs, args, "app stop")
	if err != nil {
		return err
	}
	if err := c.StopApp(ctx, appID); err != nil {
		return err
	}
	fmt.Println(appID)
	return nil
}

func runAppLogs(ctx context.Context, args []string) error {
	fs := cliFlags("app logs", "[-f] APP", "Prints what an app's functions wrote to stdout and stderr, as the server keeps it.")
	follow := fs.Bool("f", false, "follow: keep printing new output until interrupted")
	fs.BoolVar(follow, "follow", false, "same as -f")
	c, appID, err := appArg(ctx, fs, args, "app logs")
	if err != nil {
		return err
	}
	for l, err := range c.AppLogs(ctx, appID, gust.AppLogsOptions{Follow: *follow}) {
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		w := os.Stdout
		if l.Stream == "stderr" {
			w = os.Stderr
		}
		if _, err := io.WriteString(w, l.Data); err != nil {
			return err
		}
	}
	return nil
}

// appArg parses the flags and the one APP argument of an app command, and resolves APP.
func appArg(ctx context.Context, fs *flag.FlagSet, args []string, cmd string) (*gust.Client, string, error) {
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return nil, "", err
	}
	if len(pos) != 1 {
		fs.Usage()
		return nil, "", fmt.Errorf("%s needs one app, a name or an id (`gust app list` shows them)", cmd)
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return nil, "", err
	}
	id, err := resolveApp(ctx, c, pos[0])
	return c, id, err
}

// resolveApp turns an app name or id into an id.
func resolveApp(ctx context.Context, c *gust.Client, app string) (string, error) {
	if strings.HasPrefix(app, "ap-") {
		if a, err := c.GetApp(ctx, app); err == nil {
			return a.ID, nil
		} else if !errors.Is(err, gust.ErrNotFound) {
			return "", err
		}
		// An app may be named like an id: try the name too.
	}
	a, err := c.LookupApp(ctx, app, false)
	if errors.Is(err, gust.ErrNotFound) {
		return "", fmt.Errorf("app %q not found: `gust app list` shows the apps", app)
	}
	if err != nil {
		return "", err
	}
	return a.ID, nil
}
