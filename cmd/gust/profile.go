package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "profile list", summary: "list the client config's profiles (* marks the one in use)", run: withTerm(runProfileList)})
	register(&command{name: "profile activate", summary: "make a profile the active one", run: withTerm(runProfileActivate)})
	register(&command{name: "profile current", summary: "print the name of the profile in use", run: withTerm(runProfileCurrent)})
}

// readProfiles reads the client config file, which must exist.
func readProfiles() (string, *gust.ConfigFile, error) {
	path, err := gust.DefaultConfigPath()
	if err != nil {
		return "", nil, err
	}
	f, err := gust.ReadConfigFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil, fmt.Errorf("no client config file at %s: run `gust up`, or `gust token set`", path)
	}
	return path, f, err
}

func runProfileList(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("profile list", "", "Lists the profiles of the client config file: server and token id (never the secret).\n"+
		"* marks the profile in use: GUST_PROFILE, else active_profile, else \"default\", else the only one.")
	if err := noPositional(fs, args, "profile list"); err != nil {
		return err
	}
	_, f, err := readProfiles()
	if err != nil {
		return err
	}
	return printProfiles(t.out, f, os.Getenv("GUST_PROFILE"))
}

// printProfiles writes the table of `gust profile list`.
func printProfiles(w io.Writer, f *gust.ConfigFile, envProfile string) error {
	current, _, err := f.SelectProfile(envProfile)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tPROFILE\tSERVER\tTOKEN")
	for _, name := range f.ProfileNames() {
		p := f.Profiles[name]
		mark := ""
		if name == current {
			mark = "*"
		}
		tok := p.TokenID
		if tok == "" && p.Token != "" {
			tok = "(single token)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, name, orDash(p.ServerURL), orDash(tok))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Profiles) == 0 {
		fmt.Fprintln(w, "(no profiles: the file is in the legacy form; `gust token set` adds one)")
	}
	return nil
}

func runProfileActivate(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("profile activate", "NAME", "Makes NAME the active profile of the client config file. GUST_PROFILE, when set, still wins.")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("profile activate needs one profile name (see `gust profile list`)")
	}
	name := pos[0]
	path, f, err := readProfiles()
	if err != nil {
		return err
	}
	if _, ok := f.Profiles[name]; !ok {
		return fmt.Errorf("%s has no profile %q (see `gust profile list`; `gust token set --profile %s` adds it)", path, name, name)
	}
	err = gust.UpdateConfigFile(path, func(f *gust.ConfigFile) error {
		f.ActiveProfile = name
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(t.out, "profile %q is active\n", name)
	if env := os.Getenv("GUST_PROFILE"); env != "" && env != name {
		fmt.Fprintf(t.err, "gust: note: GUST_PROFILE=%s is set and wins over the active profile\n", env)
	}
	return nil
}

func runProfileCurrent(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("profile current", "", "Prints the name of the profile in use: GUST_PROFILE, else the active profile, else \"default\", else the only one.")
	if err := noPositional(fs, args, "profile current"); err != nil {
		return err
	}
	path, f, err := readProfiles()
	if err != nil {
		return err
	}
	name, _, err := f.SelectProfile(os.Getenv("GUST_PROFILE"))
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("no profile is in use: %s has none chosen; pick one with `gust profile activate NAME` or GUST_PROFILE", path)
	}
	fmt.Fprintln(t.out, name)
	return nil
}
