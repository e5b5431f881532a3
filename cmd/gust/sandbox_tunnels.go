package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "sandbox tunnels", summary: "print a sandbox's tunnels (its exposed ports' URLs)", run: runSandboxTunnels})
}

func runSandboxTunnels(ctx context.Context, args []string) error {
	fs := cliFlags("sandbox tunnels", "[flags] SANDBOX_ID",
		"Prints the tunnels of a sandbox created with ports (--encrypted-port and the like): each\ncontainer port's HTTPS URL and, for unencrypted ports, its raw TCP address.")
	timeout := secondsFlag(fs, "timeout", "wait this long for a starting sandbox (default 50 s)")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("sandbox tunnels needs one sandbox id")
	}
	sb, err := sandboxByID(ctx, pos[0])
	if err != nil {
		return err
	}
	tuns, err := sb.Tunnels(ctx, *timeout)
	if err != nil {
		return err
	}
	if len(tuns) == 0 {
		fmt.Fprintf(os.Stderr, "sandbox %s exposes no ports (create it with --encrypted-port, --unencrypted-port or --h2-port)\n", sb.ID)
		return nil
	}
	ports := make([]int, 0, len(tuns))
	for p := range tuns {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tURL\tTCP")
	for _, p := range ports {
		t := tuns[p]
		tcp := "-"
		if h, tp, err := t.TCPSocket(); err == nil {
			tcp = fmt.Sprintf("%s:%d", h, tp)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", p, t.URL(), tcp)
	}
	return tw.Flush()
}

// portsFlag is a repeatable flag of TCP ports ("8000" or "8000,8001").
func portsFlag(fs *flag.FlagSet, name, usage string) *[]int {
	var ports []int
	fs.Func(name, usage, func(s string) error {
		for _, f := range strings.Split(s, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || p < 1 || p > 65535 {
				return fmt.Errorf("%q is not a TCP port (1-65535)", f)
			}
			ports = append(ports, p)
		}
		return nil
	})
	return &ports
}

// tunnelFlags are sandbox create's flags for ports and readiness.
type tunnelFlags struct {
	encrypted, unencrypted, h2 *[]int
	allow                      *string
	probeTCP                   *int
	probeExec                  *string
}

func bindTunnelFlags(fs *flag.FlagSet) *tunnelFlags {
	return &tunnelFlags{
		encrypted:   portsFlag(fs, "encrypted-port", "expose this container port over HTTPS through the ingress (repeatable)"),
		unencrypted: portsFlag(fs, "unencrypted-port", "expose this container port over HTTPS and raw TCP (repeatable)"),
		h2:          portsFlag(fs, "h2-port", "expose this container port over HTTPS advertising HTTP/2 (repeatable)"),
		allow:       fs.String("inbound-cidr-allowlist", "", "comma-separated CIDRs that may reach the ports (default: anyone who reaches the ingress)"),
		probeTCP:    fs.Int("probe-tcp", 0, "readiness probe: ready once this port accepts connections"),
		probeExec:   fs.String("probe-exec", "", "readiness probe: ready once this shell command exits 0"),
	}
}

// apply sets the ports and probe of a create.
func (f *tunnelFlags) apply(o *gust.SandboxOptions) error {
	o.EncryptedPorts, o.UnencryptedPorts, o.H2Ports = *f.encrypted, *f.unencrypted, *f.h2
	if *f.allow != "" {
		o.InboundCIDRAllowlist = strings.Split(*f.allow, ",")
	}
	var err error
	switch {
	case *f.probeTCP != 0 && *f.probeExec != "":
		return errors.New("give --probe-tcp or --probe-exec, not both")
	case *f.probeTCP != 0:
		o.ReadinessProbe, err = gust.NewTCPProbe(*f.probeTCP, nil)
	case *f.probeExec != "":
		o.ReadinessProbe, err = gust.NewExecProbe([]string{"sh", "-c", *f.probeExec}, nil)
	}
	return err
}
