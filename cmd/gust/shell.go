package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"syscall"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
	"golang.org/x/term"
)

func init() {
	register(&command{name: "shell", summary: "interactive shell in a sandbox (a new one, or SANDBOX_ID)", run: runShell})
}

// shellTimeout is the lifetime of a sandbox made for a shell: longer than the API's default,
// since a person works in it. It is terminated when the shell exits anyway.
const shellTimeout = time.Hour

func runShell(ctx context.Context, args []string) error {
	fs := cliFlags("shell", "[flags] [SANDBOX_ID] [-- CMD...]",
		"Opens an interactive terminal in a running sandbox, or in a new one that is terminated when\n"+
			"the shell exits. Exits with the shell's exit code.")
	var o sandboxFlags
	o.bind(fs)
	shellCmd := fs.String("cmd", "/bin/bash", "program to run (or give CMD after --)")
	timeout := secondsFlag(fs, "timeout", "lifetime of a new sandbox, seconds or a duration (default 1h)")
	pos, argv, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		argv = []string{*shellCmd}
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	var sb *gust.Sandbox
	if len(pos) == 1 {
		if sb, err = c.Sandbox(ctx, pos[0]); err != nil {
			return err
		}
		if sb.Status != gust.StatusRunning {
			return fmt.Errorf("sandbox %s is %s, not running; `gust shell` without an id starts a new one", sb.ID, sb.Status)
		}
	} else {
		appID, imageID, err := o.resolve(ctx, c)
		if err != nil {
			return err
		}
		if *timeout == 0 {
			*timeout = shellTimeout
		}
		sb, err = c.CreateSandbox(ctx, gust.SandboxOptions{App: appID, Image: imageID, Timeout: *timeout, Isolation: o.isolation})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "gust: sandbox %s (%s); it is terminated when this shell exits\n", sb.ID, sb.Isolation)
		defer func() {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := sb.Terminate(tctx); err != nil {
				fmt.Fprintf(os.Stderr, "gust: terminating sandbox %s: %v\n", sb.ID, err)
			}
		}()
	}
	code, err := execInteractive(ctx, sb, gust.ExecOptions{Command: argv})
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// execInteractive runs a command on a pseudo-terminal in the sandbox, wired to ours: the local
// terminal goes to raw mode (restored on return), stdin is passed through byte by byte, window
// size changes are passed on, and the command's exit code is returned.
func execInteractive(ctx context.Context, sb *gust.Sandbox, opts gust.ExecOptions) (int, error) {
	stdinFd := int(os.Stdin.Fd())
	opts.PTY = true
	if rows, cols, ok := termSize(); ok {
		opts.Rows, opts.Cols = rows, cols
	}
	if _, ok := opts.Env["TERM"]; !ok {
		t := os.Getenv("TERM")
		if t == "" || t == "dumb" {
			t = "xterm-256color"
		}
		opts.Env = maps.Clone(opts.Env)
		if opts.Env == nil {
			opts.Env = map[string]string{}
		}
		opts.Env["TERM"] = t
	}
	opts.Stdin, opts.Stdout, opts.Stderr = os.Stdin, os.Stdout, os.Stderr

	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)

	// The stream outlives ctx (cancelled by SIGINT or SIGTERM sent to gust), so that the
	// command can be told of the hang-up and its end still comes back.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	p, err := sb.Exec(streamCtx, opts)
	if err != nil {
		return 0, err
	}
	restore := func() {}
	if term.IsTerminal(stdinFd) {
		old, err := term.MakeRaw(stdinFd)
		if err != nil {
			return 0, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		restore = func() { term.Restore(stdinFd, old) }
	}
	defer func() { restore() }()
	hungUp := ctx.Done()
	var giveUp <-chan time.Time
	for {
		select {
		case <-p.Done():
			restore()
			restore = func() {}
			return waitReport(streamCtx, p)
		case <-winch:
			if rows, cols, ok := termSize(); ok {
				rctx, rcancel := context.WithTimeout(streamCtx, 5*time.Second)
				p.Resize(rctx, rows, cols) // best effort: a lost resize only redraws badly
				rcancel()
			}
		case <-hungUp:
			// Like a terminal that hangs up: SIGHUP to the command, then wait a little for it.
			hungUp = nil
			sctx, scancel := context.WithTimeout(streamCtx, 5*time.Second)
			p.Signal(sctx, syscall.SIGHUP)
			scancel()
			giveUp = time.After(5 * time.Second)
		case <-giveUp:
			return 0, errors.New("interrupted; the command did not exit after SIGHUP")
		}
	}
}

// termSize returns the local terminal's size, from stdout or else stdin.
func termSize() (rows, cols int, ok bool) {
	for _, f := range []*os.File{os.Stdout, os.Stdin} {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 0 && h > 0 {
			return h, w, true
		}
	}
	return 0, 0, false
}
