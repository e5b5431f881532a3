package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "sandbox create", summary: "create a sandbox and print its id", run: runSandboxCreate})
	register(&command{name: "sandbox exec", summary: "run a command in a sandbox, streaming its output", run: runSandboxExec})
	register(&command{name: "sandbox ls", summary: "list sandboxes", run: runSandboxList})
	register(&command{name: "sandbox rm", summary: "terminate sandboxes", run: runSandboxRemove})
	register(&command{name: "sandbox logs", summary: "print (or follow) a sandbox's command output", run: runSandboxLogs})
	register(&command{name: "sandbox network", summary: "replace a running sandbox's outbound network policy", run: runSandboxNetwork})
}

// defaultApp is the app that sandboxes made from the CLI belong to, as in the Python SDK.
const defaultApp = "sandboxes"

func runSandboxCreate(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox create", "[flags] [-- CMD...]",
		"Creates a sandbox and prints its id. Without CMD it stays up until `gust sandbox rm`, its\ntimeout or its idle timeout.")
	var o sandboxFlags
	o.bind(fs)
	timeout := secondsFlag(fs, "timeout", "lifetime limit, seconds or a duration like 10m (default: the server's, 300 s)")
	idle := secondsFlag(fs, "idle-timeout", "end the sandbox after this long without exec or stdin activity")
	cpu := fs.Float64("cpu", 0, "CPU cores (default: the server's)")
	memory := fs.Int("memory", 0, "memory limit, MiB (default: the server's)")
	workdir := fs.String("workdir", "", "working directory of the command and execs")
	env := kvFlag(fs, "env", "environment variable K=V (repeatable)")
	var nf netPolicyFlags
	nf.bind(fs)
	name := fs.String("name", "", "name, unique among the app's running sandboxes")
	tags := kvFlag(fs, "tag", "tag k=v (repeatable)")
	tunnels := bindTunnelFlags(fs)
	wait := fs.Bool("wait-ready", false, "return once the readiness probe passes (or the sandbox runs)")
	gpu := fs.String("gpu", "", "GPUs in order of preference, comma-separated: H100, A100-80GB:2, any")
	_, cmd, err := parseArgs(fs, args, 0)
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	appID, imageID, err := o.resolve(ctx, c)
	if err != nil {
		return err
	}
	opts := gust.SandboxOptions{
		App: appID, Image: imageID, Command: cmd, Timeout: *timeout, IdleTimeout: *idle, CPU: *cpu,
		MemoryMiB: *memory, Workdir: *workdir, Env: env, Name: *name,
		BlockNetwork: nf.policy().BlockNetwork, OutboundCIDRAllowlist: nf.policy().OutboundCIDRAllowlist,
		OutboundDomainAllowlist: nf.policy().OutboundDomainAllowlist,
		Tags:                    tags, Isolation: o.isolation, GPU: splitList(*gpu),
	}
	if err := tunnels.apply(&opts); err != nil {
		return err
	}
	sb, err := c.CreateSandbox(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Println(sb.ID)
	if *wait {
		return sb.WaitUntilReady(ctx, 0)
	}
	return nil
}

// sandboxFlags are the flags that choose where a new sandbox goes and what it runs on, shared
// by `sandbox create` and `shell`.
type sandboxFlags struct {
	app, image, isolation string
}

func (o *sandboxFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.app, "app", defaultApp, "app the sandbox belongs to (created if missing)")
	fs.StringVar(&o.image, "image", gust.ImageDebianSlim, "image: debian_slim, or an image id (im-...) such as a snapshot")
	fs.StringVar(&o.isolation, "isolation", "", "runc or gvisor (default: the server's)")
}

// resolve looks up (or creates) the app and resolves the image, building debian_slim if the
// server has not yet (its build log goes to stderr).
func (o *sandboxFlags) resolve(ctx context.Context, c *gust.Client) (appID, imageID string, err error) {
	switch o.isolation {
	case "", gust.IsolationRunc, gust.IsolationGVisor:
	case "runsc":
		o.isolation = gust.IsolationGVisor
	default:
		return "", "", fmt.Errorf("--isolation %q is not known: use runc or gvisor", o.isolation)
	}
	app, err := c.LookupApp(ctx, o.app, true)
	if err != nil {
		return "", "", err
	}
	switch {
	case o.image == gust.ImageDebianSlim:
		im, err := c.DebianSlim(ctx, gust.ImageOptions{Logs: os.Stderr})
		if err != nil {
			return "", "", err
		}
		return app.ID, im.ID, nil
	case strings.HasPrefix(o.image, "im-"):
		return app.ID, o.image, nil
	}
	return "", "", fmt.Errorf("--image %q is not known: use debian_slim or an image id (im-...)", o.image)
}

func runSandboxExec(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox exec", "[flags] SANDBOX_ID [--] CMD...",
		"Runs CMD in a running sandbox, streams its output and stdin, and exits with its exit code.")
	pty := fs.Bool("pty", false, "run on a pseudo-terminal (interactive programs; raw mode when stdin is a terminal)")
	workdir := fs.String("workdir", "", "working directory (default: the sandbox's)")
	env := kvFlag(fs, "env", "environment variable K=V (repeatable)")
	timeout := secondsFlag(fs, "timeout", "kill the command after this long (it then exits 124)")
	pos, cmd, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) != 1 || len(cmd) == 0 {
		fs.Usage()
		return errors.New("sandbox exec needs a sandbox id and a command, e.g. `gust sandbox exec sb-... -- ls -l`")
	}
	sb, err := sandboxByID(ctx, pos[0])
	if err != nil {
		return err
	}
	opts := gust.ExecOptions{Command: cmd, Env: env, Workdir: *workdir, Timeout: *timeout}
	var code int
	if *pty {
		code, err = execInteractive(ctx, sb, opts)
	} else {
		code, err = execStreaming(ctx, sb, opts)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// execStreaming runs a command without a terminal: local stdin goes to its stdin, its stdout
// and stderr to ours. An interrupt is passed on to the remote command as a signal; a second
// one leaves it running and exits.
func execStreaming(ctx context.Context, sb *gust.Sandbox, opts gust.ExecOptions) (int, error) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// The stream must outlive the first interrupt, which cancels ctx: it is how the command's
	// end (after the signal we pass on) comes back.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	opts.Stdin, opts.Stdout, opts.Stderr = os.Stdin, os.Stdout, os.Stderr
	p, err := sb.Exec(streamCtx, opts)
	if err != nil {
		return 0, err
	}
	interrupts := 0
	for {
		select {
		case <-p.Done():
			return waitReport(streamCtx, p)
		case sig := <-sigs:
			interrupts++
			if interrupts > 1 {
				fmt.Fprintf(os.Stderr, "gust: left %s running in sandbox %s\n", p.ID, sb.ID)
				return 128 + int(sig.(syscall.Signal)), nil
			}
			sctx, scancel := context.WithTimeout(streamCtx, 5*time.Second)
			if err := p.Signal(sctx, sig.(syscall.Signal)); err != nil {
				fmt.Fprintf(os.Stderr, "gust: passing %v on: %v\n", sig, err)
			}
			scancel()
		}
	}
}

// waitReport returns a finished process's exit code, saying on stderr why it ended when that
// was unusual (e.g. its timeout).
func waitReport(ctx context.Context, p *gust.Process) (int, error) {
	code, err := p.Wait(ctx)
	if err == nil && p.ExitError != "" {
		fmt.Fprintln(os.Stderr, "gust:", p.ExitError)
	}
	return code, err
}

func runSandboxList(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox ls", "[flags]", "Lists running sandboxes, newest first.")
	app := fs.String("app", "", "only this app's sandboxes")
	all := fs.Bool("all", false, "include sandboxes that have ended")
	tags := kvFlag(fs, "tag", "only sandboxes with tag k=v (repeatable)")
	if _, extra, err := parseArgs(fs, args, 0); err != nil {
		return err
	} else if len(extra) > 0 {
		return fmt.Errorf("sandbox ls takes no arguments, got %q", extra)
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	apps, err := c.ListApps(ctx)
	if err != nil {
		return err
	}
	names := map[string]string{}
	opts := gust.ListOptions{Tags: tags, IncludeFinished: *all}
	for _, a := range apps {
		names[a.ID] = a.Name
		if a.Name == *app {
			opts.AppID = a.ID
		}
	}
	if *app != "" && opts.AppID == "" {
		return fmt.Errorf("app %q not found; `gust sandbox ls` without --app lists every app's sandboxes", *app)
	}
	sbs, err := c.ListSandboxes(ctx, opts)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPP\tNAME\tSTATUS\tISOLATION\tCREATED")
	now := time.Now()
	for _, sb := range sbs {
		status := string(sb.Status)
		if sb.Status.Done() && sb.ExitCode != nil {
			status += " (" + strconv.Itoa(*sb.ExitCode) + ")"
		}
		app := names[sb.AppID]
		if app == "" {
			app = sb.AppID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sb.ID, app, orDash(sb.Name), status, sb.Isolation, ago(now, sb.CreatedAt))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago says how long before now t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02 15:04")
}

func runSandboxRemove(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox rm", "SANDBOX_ID...", "Terminates sandboxes (their exit code becomes 137).")
	ids, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		fs.Usage()
		return errors.New("sandbox rm needs at least one sandbox id")
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		sb, err := c.Sandbox(ctx, id)
		if err == nil {
			err = sb.Terminate(ctx)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(id)
	}
	return errors.Join(errs...)
}

// netPolicyFlags are the outbound network flags of `sandbox create` and `sandbox network`.
type netPolicyFlags struct {
	block          *bool
	cidrs, domains *string
}

func (f *netPolicyFlags) bind(fs *flag.FlagSet) {
	f.block = fs.Bool("block-network", false, "cut the sandbox off the network (loopback only)")
	f.cidrs = fs.String("cidr-allowlist", "", "comma-separated IPv4 ranges, the only ones it may reach (\"none\" for an empty list)")
	f.domains = fs.String("domain-allowlist", "", "comma-separated names (pypi.org, *.github.com) it may reach over HTTP and HTTPS")
}

func (f *netPolicyFlags) policy() gust.NetworkPolicy {
	split := func(s string) []string {
		switch s {
		case "":
			return nil
		case "none":
			return []string{}
		}
		return strings.Split(s, ",")
	}
	return gust.NetworkPolicy{BlockNetwork: *f.block, OutboundCIDRAllowlist: split(*f.cidrs), OutboundDomainAllowlist: split(*f.domains)}
}

func runSandboxNetwork(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox network", "[flags] SANDBOX_ID",
		"Replaces a running sandbox's outbound network policy, whole and at once. No flag opens the\nnetwork again (all but what the worker always denies).")
	var nf netPolicyFlags
	nf.bind(fs)
	ids, _, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if len(ids) != 1 {
		fs.Usage()
		return errors.New("sandbox network needs a sandbox id")
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	sb, err := c.Sandbox(ctx, ids[0])
	if err != nil {
		return err
	}
	if err := sb.SetNetworkAccess(ctx, nf.policy()); err != nil {
		return err
	}
	fmt.Println(sb.ID)
	return nil
}

func runSandboxLogs(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox logs", "[-f] SANDBOX_ID", "Prints the output of a sandbox's command (the last MiB kept).")
	follow := fs.Bool("f", false, "follow: keep printing output until the command exits")
	fs.BoolVar(follow, "follow", false, "same as -f")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("sandbox logs needs one sandbox id")
	}
	sb, err := sandboxByID(ctx, pos[0])
	if err != nil {
		return err
	}
	err = sb.Logs(ctx, *follow, os.Stdout, os.Stderr)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted while following
	}
	return err
}

// cliFlags returns a command's flag set with a usage message.
// sandboxByID connects with the client config and fetches one sandbox.
func sandboxByID(ctx context.Context, id string) (*gust.Sandbox, error) {
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return nil, err
	}
	return c.Sandbox(ctx, id)
}

func cliFlags(name, synopsis, about string) *flag.FlagSet {
	fs := newFlags(name)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: gust %s %s\n\n%s\n\nFlags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags anywhere among args. Positional arguments are collected until there
// are maxPos of them (maxPos < 0: no limit); after that, or after "--", the remaining
// arguments are the tail (a command), left unparsed. -h prints usage and is not an error to
// the caller's caller: it returns exitCode(0).
func parseArgs(fs *flag.FlagSet, args []string, maxPos int) (pos, tail []string, err error) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, exitCode(0)
			}
			return nil, nil, err
		}
		rest := fs.Args()
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return pos, rest, nil
		}
		if len(rest) == 0 {
			return pos, nil, nil
		}
		if len(pos) == maxPos {
			return pos, rest, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// kvFlag defines a repeatable K=V flag, filling the map it returns.
func kvFlag(fs *flag.FlagSet, name, usage string) map[string]string {
	m := kvMap{}
	fs.Var(m, name, usage)
	return m
}

type kvMap map[string]string

func (m kvMap) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func (m kvMap) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q must look like KEY=VALUE", s)
	}
	m[k] = v
	return nil
}

// secondsFlag defines a duration flag that takes seconds (300, 1.5) or a Go duration (5m).
func secondsFlag(fs *flag.FlagSet, name, usage string) *time.Duration {
	d := new(time.Duration)
	fs.Var((*secondsValue)(d), name, usage)
	return d
}

type secondsValue time.Duration

func (s *secondsValue) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	return time.Duration(*s).String()
}

func (s *secondsValue) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return errors.New("must not be negative")
		}
		*s = secondsValue(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a number of seconds or a duration like 90s or 10m", v)
	}
	*s = secondsValue(d)
	return nil
}
