package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// command is one subcommand. Commands register themselves from their own file's init.
type command struct {
	name    string // may hold a space for a group, e.g. "sandbox create"
	summary string
	hidden  bool
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// exitCode makes gust exit with a given status without printing anything (e.g. `gust sandbox
// exec` passes on the remote exit code).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage()
		return nil
	}
	// Longest match first: "sandbox create" before "sandbox".
	if len(args) >= 2 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			return c.run(ctx, args[2:])
		}
	}
	if c, ok := commands[args[0]]; ok {
		return c.run(ctx, args[1:])
	}
	var group []string
	for name := range commands {
		if strings.HasPrefix(name, args[0]+" ") {
			group = append(group, name)
		}
	}
	if len(group) > 0 {
		sort.Strings(group)
		return fmt.Errorf("%q needs a subcommand: %s", args[0], strings.Join(group, ", "))
	}
	return fmt.Errorf("unknown command %q; run `gust help` for the list", args[0])
}

func printUsage() {
	fmt.Fprintln(os.Stderr, "gust: self-hosted serverless compute for AI workloads\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-18s %s\n", n, commands[n].summary)
	}
}

// newFlags makes a FlagSet for a command that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("gust "+name, flag.ContinueOnError)
	return fs
}
