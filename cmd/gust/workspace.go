package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "workspace create", summary: "make a workspace and its owner token (operator only)", run: withTerm(runWorkspaceCreate)})
	register(&command{name: "workspace list", summary: "list workspaces", run: withTerm(runWorkspaceList)})
	register(&command{name: "workspace quotas", summary: "show or (operator) set a workspace's quotas", run: withTerm(runWorkspaceQuotas)})
}

func runWorkspaceCreate(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("workspace create", "NAME [--set-profile P]",
		"Makes a workspace and its first token, with the owner role (you need the operator's credentials,\n"+
			"e.g. the profile `gust up` writes). Prints the token's id and secret, which are never shown again;\n"+
			"with --set-profile the token is stored in the client config file as that profile instead.")
	setProfile := fs.String("set-profile", "", "store the owner token in the client config as this profile")
	activate := fs.Bool("activate", false, "with --set-profile: make that profile the active one")
	asJSON := fs.Bool("json", false, "print the workspace and token as JSON")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("workspace create needs one name, e.g. `gust workspace create acme`")
	}
	c, cfg, err := loadClient()
	if err != nil {
		return err
	}
	ws, tok, err := c.CreateWorkspace(ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON && *setProfile == "" {
		return printJSON(t.out, map[string]any{"workspace": ws, "token": tok})
	}
	if !*asJSON {
		fmt.Fprintf(t.out, "workspace %s (%s)\n", ws.Name, ws.ID)
	}
	return showNewToken(t, tok, cfg, *setProfile, *activate, *asJSON)
}

func runWorkspaceList(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("workspace list", "[--json]", "Lists workspaces: all of them for the operator, else your own.")
	asJSON := fs.Bool("json", false, "print the workspaces as JSON")
	if err := noPositional(fs, args, "workspace list"); err != nil {
		return err
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	list, err := c.ListWorkspaces(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, list)
	}
	return printWorkspaces(t.out, list, time.Now())
}

// printWorkspaces writes the table of `gust workspace list`, by name.
func printWorkspaces(w io.Writer, list []*gust.Workspace, now time.Time) error {
	list = append([]*gust.Workspace(nil), list...)
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE ID\tNAME\tCREATED")
	for _, ws := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ws.ID, ws.Name, ago(now, ws.CreatedAt))
	}
	return tw.Flush()
}

// quotaFlags are the flags of `gust workspace quotas`, one per quota.
type quotaFlags struct {
	fs *flag.FlagSet
	q  gust.Quotas
}

func newQuotaFlags(fs *flag.FlagSet) *quotaFlags {
	qf := &quotaFlags{fs: fs}
	fs.IntVar(&qf.q.Sandboxes, "sandboxes", 0, "containers running at once (0: unlimited)")
	fs.Float64Var(&qf.q.CPU, "cpu", 0, "CPU cores reserved at once (0: unlimited)")
	fs.Int64Var(&qf.q.MemoryMiB, "memory-mib", 0, "memory reserved at once, MiB (0: unlimited)")
	fs.IntVar(&qf.q.GPUs, "gpus", 0, "GPUs reserved at once (0: unlimited)")
	fs.Int64Var(&qf.q.ImageDiskMiB, "image-disk-mib", 0, "disk for the workspace's images, MiB (0: unlimited)")
	fs.Float64Var(&qf.q.RequestsPerSecond, "requests-per-second", 0, "API requests per second (0: unlimited)")
	fs.Int64Var(&qf.q.KVStoreMiB, "kv-store-mib", 0, "contents of Dicts and Queues, MiB (0: unlimited)")
	fs.Int64Var(&qf.q.VolumeMiB, "volume-mib", 0, "files in Volumes, MiB (0: unlimited)")
	return qf
}

// apply copies the quotas given on the command line onto q; it reports whether any was.
func (qf *quotaFlags) apply(q *gust.Quotas) (bool, error) {
	set := false
	var err error
	qf.fs.Visit(func(f *flag.Flag) {
		neg := false
		switch f.Name {
		case "sandboxes":
			q.Sandboxes, neg = qf.q.Sandboxes, qf.q.Sandboxes < 0
		case "cpu":
			q.CPU, neg = qf.q.CPU, qf.q.CPU < 0
		case "memory-mib":
			q.MemoryMiB, neg = qf.q.MemoryMiB, qf.q.MemoryMiB < 0
		case "gpus":
			q.GPUs, neg = qf.q.GPUs, qf.q.GPUs < 0
		case "image-disk-mib":
			q.ImageDiskMiB, neg = qf.q.ImageDiskMiB, qf.q.ImageDiskMiB < 0
		case "requests-per-second":
			q.RequestsPerSecond, neg = qf.q.RequestsPerSecond, qf.q.RequestsPerSecond < 0
		case "kv-store-mib":
			q.KVStoreMiB, neg = qf.q.KVStoreMiB, qf.q.KVStoreMiB < 0
		case "volume-mib":
			q.VolumeMiB, neg = qf.q.VolumeMiB, qf.q.VolumeMiB < 0
		default:
			return
		}
		set = true
		if neg && err == nil {
			err = fmt.Errorf("--%s must not be negative (0 means unlimited)", f.Name)
		}
	})
	return set, err
}

func runWorkspaceQuotas(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("workspace quotas", "[WORKSPACE_ID] [--sandboxes N] [--cpu X] [--memory-mib N] [--gpus N] [--image-disk-mib N] [--requests-per-second N] [--kv-store-mib N]",
		"Shows a workspace's quotas (default: yours); 0 means unlimited. With flags, sets those quotas and keeps\n"+
			"the others (you need the operator's credentials).")
	qf := newQuotaFlags(fs)
	asJSON := fs.Bool("json", false, "print the quotas as JSON")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		fs.Usage()
		return fmt.Errorf("workspace quotas takes at most one workspace id, got %q", pos)
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	} else {
		w, err := c.Whoami(ctx)
		if err != nil {
			return err
		}
		id = w.WorkspaceID
	}
	q, err := c.GetQuotas(ctx, id)
	if err != nil {
		return err
	}
	set, err := qf.apply(q)
	if err != nil {
		return err
	}
	if set {
		if q, err = c.SetQuotas(ctx, id, *q); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(t.out, q)
	}
	return printQuotas(t.out, id, q)
}

// printQuotas writes the quotas of `gust workspace quotas`.
func printQuotas(w io.Writer, id string, q *gust.Quotas) error {
	num := func(v float64) string {
		if v == 0 {
			return "unlimited"
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workspace\t%s\n", id)
	fmt.Fprintf(tw, "sandboxes\t%s\n", num(float64(q.Sandboxes)))
	fmt.Fprintf(tw, "cpu\t%s\n", num(q.CPU))
	fmt.Fprintf(tw, "memory_mib\t%s\n", num(float64(q.MemoryMiB)))
	fmt.Fprintf(tw, "gpus\t%s\n", num(float64(q.GPUs)))
	fmt.Fprintf(tw, "image_disk_mib\t%s\n", num(float64(q.ImageDiskMiB)))
	fmt.Fprintf(tw, "requests_per_second\t%s\n", num(q.RequestsPerSecond))
	fmt.Fprintf(tw, "kv_store_mib\t%s\n", num(float64(q.KVStoreMiB)))
	fmt.Fprintf(tw, "volume_mib\t%s\n", num(float64(q.VolumeMiB)))
	return tw.Flush()
}
