package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Tokens reach the daemons from GUST_TOKEN or a file (--token-file), not from the command
// line: every user of the machine reads another's arguments with ps, and the profiler's
// /debug/pprof/cmdline shows them too. --token still works, with a warning.

// tokenFlagWarning is printed when a token is given as --token.
const tokenFlagWarning = "gust: warning: --token puts the token on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline); pass it in GUST_TOKEN or a file named by --token-file instead\n"

// parse parses a daemon's flags, then resolves --token and --token-file into d.token,
// warning on stderr about a token given on the command line.
func (d *daemonFlags) parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return d.resolveTokenFlags(stderr)
}

// resolveTokenFlags sets d.token from --token-file, or keeps --token with a warning.
func (d *daemonFlags) resolveTokenFlags(stderr io.Writer) error {
	switch {
	case d.token != "" && d.tokenFile != "":
		return errors.New("give the token once: --token-file or --token, not both (better: --token-file or GUST_TOKEN)")
	case d.token != "":
		if _, err := io.WriteString(stderr, tokenFlagWarning); err != nil {
			return fmt.Errorf("writing a warning about --token: %w", err)
		}
		return nil
	case d.tokenFile != "":
		t, err := readTokenFile(d.tokenFile, stderr)
		if err != nil {
			return err
		}
		d.token = t
	}
	return nil
}

// readTokenFile reads a token kept alone in a file (surrounding whitespace ignored), warning
// when other users may read the file.
func readTokenFile(path string, stderr io.Writer) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("--token-file %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("--token-file: reading %s: %w", path, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" || strings.ContainsAny(t, " \t\r\n") {
		return "", fmt.Errorf("--token-file %s: want the token alone in the file (one line)", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if _, err := fmt.Fprintf(stderr, "gust: warning: --token-file %s is readable by other users (mode %v): chmod 600 it\n", path, fi.Mode().Perm()); err != nil {
			return "", fmt.Errorf("writing a warning about --token-file: %w", err)
		}
	}
	return t, nil
}
