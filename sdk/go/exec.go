package gust

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// ExecOptions configures Sandbox.Exec.
type ExecOptions struct {
	Command []string          // the program and its arguments, required
	Env     map[string]string // added to the sandbox's environment
	Workdir string            // "" for the sandbox's
	// Timeout kills the process after this long; it then exits 124. 0 for none.
	Timeout time.Duration

	// PTY runs the process on a pseudo-terminal of Rows×Cols (default 24×80); its output then
	// all arrives as stdout.
	PTY        bool
	Rows, Cols int

	// Stdin, if set, is copied to the process's stdin, which is closed at its EOF. If nil,
	// stdin stays open for WriteStdin until CloseStdin.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output as it arrives; nil drops it.
	Stdout, Stderr io.Writer
}

// Process is a command running in a sandbox.
type Process struct {
	// ID is the exec's id ("main" for the sandbox's own command).
	ID string
	// ExitCode is the process's exit code once Wait has returned it; -1 before.
	ExitCode int
	// ExitError explains an unusual exit, e.g. "exec timed out after 5 s"; "" otherwise.
	ExitError string

	sb   *Sandbox
	ctx  context.Context
	done chan struct{} // closed when output is copied and the exit is known (or lost)
	err  error         // why the output stream failed, set before done is closed

	stdinMu     sync.Mutex
	stdinClosed bool
}

// Exec starts a command in the sandbox and returns once it has started. Its output is copied
// to opts.Stdout and opts.Stderr from a goroutine as it arrives; Wait returns after the last
// of it is written. ctx bounds the whole process as seen from here: when it ends, output stops
// being read and Wait returns ctx's error, but the remote process is not killed (use Signal).
func (s *Sandbox) Exec(ctx context.Context, opts ExecOptions) (*Process, error) {
	if len(opts.Command) == 0 {
		return nil, fmt.Errorf("exec in sandbox %s: %w", s.ID, &APIError{Status: http.StatusBadRequest, Kind: KindInvalid,
			Message: "ExecOptions.Command is required: give the program and its arguments, e.g. []string{\"ls\", \"-l\"}"})
	}
	body := map[string]any{"command": opts.Command, "stream": true}
	if len(opts.Env) > 0 {
		body["env"] = opts.Env
	}
	if opts.Workdir != "" {
		body["workdir"] = opts.Workdir
	}
	if opts.Timeout > 0 {
		body["timeout"] = seconds(opts.Timeout)
	}
	if opts.PTY {
		rows, cols := opts.Rows, opts.Cols
		if rows <= 0 || cols <= 0 {
			rows, cols = 24, 80
		}
		body["pty"], body["rows"], body["cols"] = true, rows, cols
	}
	resp, err := s.c.send(ctx, request{method: http.MethodPost, path: s.path("/execs"), json: body})
	if err != nil {
		return nil, fmt.Errorf("exec in sandbox %s: %w", s.ID, err)
	}
	lr := newLineReader(resp.Body)
	var first streamLine
	if err := lr.next(&first); err != nil || first.ExecID == "" {
		resp.Body.Close()
		if err == nil {
			if e := first.apiError(); e != nil {
				err = e
			} else {
				err = errors.New("the server's exec stream did not start with an exec_id line")
			}
		}
		return nil, fmt.Errorf("exec in sandbox %s: %w", s.ID, err)
	}
	p := &Process{ID: first.ExecID, ExitCode: -1, sb: s, ctx: ctx, done: make(chan struct{})}
	go p.copyOutput(resp.Body, lr, opts.Stdout, opts.Stderr)
	if opts.Stdin != nil {
		go p.copyStdin(opts.Stdin)
	}
	return p, nil
}

// Attach returns the process with this exec id (e.g. "main", the sandbox's own command),
// copying the output not yet read to stdout and stderr as Exec does.
func (s *Sandbox) Attach(ctx context.Context, execID string, stdout, stderr io.Writer) (*Process, error) {
	p := &Process{ID: execID, ExitCode: -1, sb: s, ctx: ctx, done: make(chan struct{})}
	resp, err := s.c.send(ctx, request{method: http.MethodGet, path: p.path("/output")})
	if err != nil {
		return nil, fmt.Errorf("attach to %s in sandbox %s: %w", execID, s.ID, err)
	}
	go p.copyOutput(resp.Body, newLineReader(resp.Body), stdout, stderr)
	return p, nil
}

func (p *Process) path(rest string) string { return p.sb.path("/execs/" + pathEscape(p.ID) + rest) }

// maxResumes bounds how often a broken output stream is reopened.
const maxResumes = 5

// copyOutput copies the output stream to the writers until the exit line. A stream that breaks
// before it is reopened with GET .../output: the worker keeps what was not yet delivered.
func (p *Process) copyOutput(body io.ReadCloser, lr *lineReader, stdout, stderr io.Writer) {
	defer close(p.done)
	for attempt := 0; ; attempt++ {
		exit, err := demux(lr, stdout, stderr)
		body.Close()
		if exit != nil {
			p.ExitCode, p.ExitError = *exit.ExitCode, exit.errorText()
			return
		}
		if err == nil {
			err = io.ErrUnexpectedEOF // the stream ended without its exit line
		}
		var we *writeError
		if p.ctx.Err() != nil || errors.As(err, &we) || attempt >= maxResumes {
			if p.ctx.Err() != nil {
				err = p.ctx.Err()
			}
			p.err = fmt.Errorf("output of %s in sandbox %s: %w", p.ID, p.sb.ID, err)
			return
		}
		if _, ok := errorsAsAPI(err); ok {
			p.err = fmt.Errorf("output of %s in sandbox %s: %w", p.ID, p.sb.ID, err)
			return
		}
		select {
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		case <-p.ctx.Done():
			p.err = fmt.Errorf("output of %s in sandbox %s: %w", p.ID, p.sb.ID, p.ctx.Err())
			return
		}
		resp, rerr := p.sb.c.send(p.ctx, request{method: http.MethodGet, path: p.path("/output")})
		if rerr != nil {
			p.err = fmt.Errorf("output of %s in sandbox %s: the stream broke (%v) and could not be reopened: %w", p.ID, p.sb.ID, err, rerr)
			return
		}
		body, lr = resp.Body, newLineReader(resp.Body)
	}
}

// copyStdin sends r to the process's stdin, then closes it.
func (p *Process) copyStdin(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := p.WriteStdin(buf[:n]); werr != nil {
				return // the process has exited, or the sandbox is gone
			}
		}
		if err != nil {
			p.CloseStdin()
			return
		}
	}
}

// WriteStdin writes data to the process's stdin.
func (p *Process) WriteStdin(data []byte) error {
	return p.stdin(data, false)
}

// CloseStdin closes the process's stdin; the process reads EOF. Closing twice is not an error.
func (p *Process) CloseStdin() error {
	return p.stdin(nil, true)
}

func (p *Process) stdin(data []byte, eof bool) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdinClosed {
		if eof {
			return nil
		}
		return fmt.Errorf("stdin of %s in sandbox %s: %w", p.ID, p.sb.ID, io.ErrClosedPipe)
	}
	var q url.Values
	if eof {
		q = url.Values{"eof": {"1"}}
	}
	err := p.sb.c.call(p.ctx, request{method: http.MethodPost, path: p.path("/stdin"), query: q, body: bytes.NewReader(data)}, nil)
	if err != nil {
		return fmt.Errorf("stdin of %s in sandbox %s: %w", p.ID, p.sb.ID, err)
	}
	if eof {
		p.stdinClosed = true
	}
	return nil
}

// Wait waits for the process to exit and for its output to be copied, and returns its exit
// code. A command that could not be started exits 127 (126 if not executable); one killed by
// signal N exits 128+N; one past its Timeout exits 124.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	if p.err != nil {
		return -1, p.err
	}
	return p.ExitCode, nil
}

// Done is closed when the process has exited and its output has been copied (or its stream
// failed; Wait says which).
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends a signal to the process. The number is the Linux one, which is what the
// sandbox runs (the usual ones, SIGHUP, SIGINT, SIGQUIT, SIGKILL and SIGTERM, have the same
// numbers everywhere; on macOS, syscall.SIGUSR1 and others differ).
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	err := p.sb.c.call(ctx, request{method: http.MethodPost, path: p.path("/signal"), json: map[string]int{"signal": int(sig)}}, nil)
	if err != nil {
		return fmt.Errorf("signal %s in sandbox %s: %w", p.ID, p.sb.ID, err)
	}
	return nil
}

// Resize sets the size of the process's terminal (PTY processes only).
func (p *Process) Resize(ctx context.Context, rows, cols int) error {
	err := p.sb.c.call(ctx, request{method: http.MethodPost, path: p.path("/resize"), json: map[string]int{"rows": rows, "cols": cols}}, nil)
	if err != nil {
		return fmt.Errorf("resize %s in sandbox %s: %w", p.ID, p.sb.ID, err)
	}
	return nil
}

// Run runs a command to its end and returns its output and exit code. opts.Stdout and
// opts.Stderr, if set, receive the output too; a nil opts.Stdin means empty stdin.
func (s *Sandbox) Run(ctx context.Context, opts ExecOptions) (stdout, stderr []byte, code int, err error) {
	var outBuf, errBuf bytes.Buffer
	opts.Stdout = teeWriter(&outBuf, opts.Stdout)
	opts.Stderr = teeWriter(&errBuf, opts.Stderr)
	closeStdin := opts.Stdin == nil
	p, err := s.Exec(ctx, opts)
	if err != nil {
		return nil, nil, -1, err
	}
	closed := make(chan error, 1)
	if closeStdin {
		// Beside the output, not before it: a short command's round trip should not wait for it.
		go func() { closed <- p.CloseStdin() }()
	} else {
		closed <- nil
	}
	code, err = p.Wait(ctx)
	<-p.done // the copy ends with ctx; don't return buffers it still writes to
	cerr := <-closed
	if err == nil && cerr != nil && !errors.Is(cerr, ErrConflict) && !errors.Is(cerr, ErrNotFound) {
		// Conflict or not found: the process (or sandbox) ended before stdin was closed, which
		// is fine.
		err = cerr
	}
	return outBuf.Bytes(), errBuf.Bytes(), code, err
}

func teeWriter(buf *bytes.Buffer, w io.Writer) io.Writer {
	if w == nil {
		return buf
	}
	return io.MultiWriter(buf, w)
}
