package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// cliIO is where a command reads and writes; tests give it buffers.
type cliIO struct {
	in       io.Reader
	out, err io.Writer
}

func stdTerm() cliIO { return cliIO{in: os.Stdin, out: os.Stdout, err: os.Stderr} }

// withTerm adapts a command that takes a term to a command's run function.
func withTerm(f func(ctx context.Context, args []string, t cliIO) error) func(context.Context, []string) error {
	return func(ctx context.Context, args []string) error { return f(ctx, args, stdTerm()) }
}

// loadClient resolves the client configuration (environment, then the config file's profile)
// and returns a client for it, with the configuration.
func loadClient() (*gust.Client, gust.Config, error) {
	cfg, err := gust.LoadConfig()
	if err != nil {
		return nil, cfg, err
	}
	c, err := gust.NewClient(cfg)
	return c, cfg, err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// parseDuration reads a Go duration ("90m", "1h30m") or a number of days ("30d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil && n >= 0 && n < 1e5 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d, nil
	}
	return 0, fmt.Errorf("%q is not a duration: write e.g. 90m, 12h or 30d", s)
}

// durationFlag is a flag holding a duration written as parseDuration reads it.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// when formats an optional time for a table.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// flags is cliFlags writing its usage and errors to t.err.
func (t cliIO) flags(name, synopsis, about string) *flag.FlagSet {
	fs := cliFlags(name, synopsis, about)
	fs.SetOutput(t.err)
	return fs
}
