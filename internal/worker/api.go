package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

func (w *Worker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs", w.handleExec)
	mux.HandleFunc("GET /v1/sandboxes/{id}/execs/{eid}/output", w.handleOutput)
	mux.HandleFunc("GET /v1/sandboxes/{id}/execs/{eid}", w.handleExecStatus)
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs/{eid}/stdin", w.handleStdin)
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs/{eid}/signal", w.handleSignal)
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs/{eid}/resize", w.handleResize)
	mux.HandleFunc("GET /v1/sandboxes/{id}/logs", w.handleLogs)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files", w.handleReadFile)
	mux.HandleFunc("PUT /v1/sandboxes/{id}/files", w.handleWriteFile)
	mux.HandleFunc("DELETE /v1/sandboxes/{id}/files", w.handleRemove)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/list", w.handleList)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/stat", w.handleStat)
	mux.HandleFunc("POST /v1/sandboxes/{id}/files/mkdir", w.handleMkdir)
	mux.HandleFunc("POST /v1/sandboxes/{id}/snapshot", w.handleSnapshot)
	mux.HandleFunc("PUT /v1/sandboxes/{id}/network", w.handleNetwork)
	mux.HandleFunc("GET /v1/sandboxes/{id}/ports/{port}/connect", w.handleConnect)
	mux.HandleFunc("GET /v1/sandboxes/{id}/ready", w.handleReady)
	mux.HandleFunc("POST /v1/sandboxes/{id}/volumes/reload", w.handleReloadVolumes)
	return mux
}

// running returns the sandbox's box if it is running here.
func (w *Worker) running(id string) (*box, Container, error) {
	b := w.box(id)
	if b == nil {
		return nil, nil, errdefs.NotFound("sandbox %s is not running on this worker", id)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case boxRunning:
	case boxStarting:
		return nil, nil, errdefs.Conflict("sandbox %s is still starting on this worker; try again once it runs", id)
	default:
		return nil, nil, errdefs.Conflict("sandbox %s is not running (it has finished or was terminated); start a new sandbox", id)
	}
	b.lastActivity = time.Now()
	return b, b.container, nil
}

func (w *Worker) handleExec(rw http.ResponseWriter, r *http.Request) {
	var req workerproto.ExecRequest
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	timeout, err := checkExec(req)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	b, c, err := w.running(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	p, err := c.Exec(initproto.ExecRequest{
		Argv: req.Command, Env: b.env(req.Env), Cwd: b.cwd(req.Workdir), PTY: req.PTY, Rows: req.Rows, Cols: req.Cols,
		User: b.spec.User,
	}, timeout)
	if err != nil {
		httpapi.WriteError(rw, errdefs.Conflict("sandbox %s is not running: %v", b.spec.ID, err))
		return
	}
	id := ids.New(ids.Exec)
	b.mu.Lock()
	b.execs[id] = p
	b.activeExecs++
	b.mu.Unlock()
	go w.execEnded(b, id, p)
	if req.Stream != nil && !*req.Stream {
		httpapi.WriteJSON(rw, http.StatusOK, workerproto.ExecStarted{ExecID: id})
		return
	}
	n := httpapi.StartNDJSON(rw)
	if n.Send(workerproto.ExecStarted{ExecID: id}) != nil {
		return // the client went away; the exec runs on, and its output waits for a reader
	}
	streamOutput(r.Context(), n, p)
}

// checkExec validates an exec request and returns its timeout (0: none).
func checkExec(req workerproto.ExecRequest) (time.Duration, error) {
	if len(req.Command) == 0 {
		return 0, errdefs.Invalid("command is required: give the program and its arguments, e.g. [\"ls\", \"-l\"]")
	}
	if req.Workdir != "" {
		if _, err := sandbox.CleanPath(req.Workdir); err != nil {
			return 0, fmt.Errorf("workdir: %w", err)
		}
	}
	if req.Timeout == nil {
		return 0, nil
	}
	if *req.Timeout <= 0 {
		return 0, errdefs.Invalid("timeout must be a positive number of seconds, got %v", *req.Timeout)
	}
	return time.Duration(*req.Timeout * float64(time.Second)), nil
}

// execEnded waits for an exec to end, counts it as activity, and forgets it a while later.
func (w *Worker) execEnded(b *box, id string, p Process) {
	if _, err := p.Wait(context.Background()); err != nil {
		w.log.Printf("sandbox %s: waiting for exec %s: %v", b.spec.ID, id, err)
	}
	b.mu.Lock()
	b.activeExecs--
	b.lastActivity = time.Now()
	b.mu.Unlock()
	// A long-lived sandbox runs many execs: forget each a while after it ends, once its output
	// has had time to be read.
	time.AfterFunc(keepFinished, func() {
		b.mu.Lock()
		delete(b.execs, id)
		b.mu.Unlock()
	})
}

// streamOutput sends a process's output until it exits or the client goes away.
func streamOutput(ctx context.Context, n *httpapi.NDJSON, p Process) {
	for {
		chunks, exit, err := p.Next(ctx)
		if err != nil {
			return // the client went away
		}
		for i, ch := range chunks {
			if n.Send(chunkLine(ch)) != nil {
				p.Unread(chunks[i:]) // the client went away: keep the rest for the next reader
				return
			}
		}
		if exit != nil {
			// The last line; if the client has gone, nobody is left to tell.
			_ = n.Send(workerproto.ExitLine{ExitCode: exit.ExitCode, Error: exit.Error})
			return
		}
	}
}

func chunkLine(ch container.Chunk) workerproto.OutputLine {
	s := "stdout"
	if ch.Stderr {
		s = "stderr"
	}
	return workerproto.OutputLine{Stream: s, Data: ch.Data, Dropped: ch.Dropped}
}

func (w *Worker) process(r *http.Request) (*box, Process, error) {
	id, eid := r.PathValue("id"), r.PathValue("eid")
	b := w.box(id)
	if b == nil {
		return nil, nil, errdefs.NotFound("sandbox %s has no processes on this worker (it ended more than %v ago, or never ran)", id, keepFinished)
	}
	b.mu.Lock()
	p := b.execs[eid]
	b.mu.Unlock()
	if p == nil {
		if eid == "main" {
			return nil, nil, errdefs.NotFound("sandbox %s was created without a command, so it has no main process", id)
		}
		return nil, nil, errdefs.NotFound("exec %s not found in sandbox %s", eid, id)
	}
	return b, p, nil
}

func (w *Worker) handleOutput(rw http.ResponseWriter, r *http.Request) {
	_, p, err := w.process(r)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	streamOutput(r.Context(), httpapi.StartNDJSON(rw), p)
}

// execStatus answers GET .../execs/{eid}.
type execStatus struct {
	ExecID   string `json:"exec_id"`
	Running  bool   `json:"running"`
	ExitCode *int   `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

func (w *Worker) handleExecStatus(rw http.ResponseWriter, r *http.Request) {
	_, p, err := w.process(r)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	// wait is optional: absent or not a number, the answer comes at once.
	if s, err := strconv.ParseFloat(r.URL.Query().Get("wait"), 64); err == nil && s > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(min(s, 60)*float64(time.Second)))
		// Its deadline passing is the expected end of the wait: the answer says it still runs.
		_, _ = p.Wait(ctx)
		cancel()
	}
	resp := execStatus{ExecID: r.PathValue("eid"), Running: true}
	if e := p.Exit(); e != nil {
		code := e.ExitCode
		resp.Running, resp.ExitCode, resp.Error = false, &code, e.Error
	}
	httpapi.WriteJSON(rw, http.StatusOK, resp)
}

func (w *Worker) handleStdin(rw http.ResponseWriter, r *http.Request) {
	b, p, err := w.process(r)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	b.touch()
	data, err := io.ReadAll(io.LimitReader(r.Body, 64<<20+1))
	if err != nil {
		httpapi.WriteError(rw, errdefs.Invalid("reading stdin body: %v", err))
		return
	}
	if len(data) > 64<<20 {
		httpapi.WriteError(rw, errdefs.TooLarge("stdin writes are limited to 64 MiB per request; send it in parts"))
		return
	}
	if p.Exit() != nil {
		httpapi.WriteError(rw, errdefs.Conflict("the process has already exited; its stdin is closed"))
		return
	}
	if len(data) > 0 {
		if err := p.WriteStdin(data); err != nil {
			httpapi.WriteError(rw, errdefs.Conflict("write stdin: %v", err))
			return
		}
	}
	if r.URL.Query().Get("eof") == "1" || r.URL.Query().Get("eof") == "true" {
		if err := p.CloseStdin(); err != nil {
			httpapi.WriteError(rw, errdefs.Conflict("close stdin: %v", err))
			return
		}
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleSignal(rw http.ResponseWriter, r *http.Request) {
	_, p, err := w.process(r)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	var req initproto.SignalRequest
	if err := httpapi.DecodeJSON(r, &req, 4096); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if req.Signal <= 0 || req.Signal > 64 {
		httpapi.WriteError(rw, errdefs.Invalid("signal must be a signal number between 1 and 64, got %d", req.Signal))
		return
	}
	if err := p.Signal(req.Signal); err != nil && p.Exit() == nil {
		httpapi.WriteError(rw, errdefs.Conflict("signal the process: %v", err))
		return
	}
	// A process that has exited takes no signal: nothing to do, as for kill(1) of a zombie.
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleResize(rw http.ResponseWriter, r *http.Request) {
	_, p, err := w.process(r)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	var req initproto.ResizeRequest
	if err := httpapi.DecodeJSON(r, &req, 4096); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if req.Rows == 0 || req.Cols == 0 {
		httpapi.WriteError(rw, errdefs.Invalid("rows and cols must be positive"))
		return
	}
	if err := p.Resize(req.Rows, req.Cols); err != nil && p.Exit() == nil {
		httpapi.WriteError(rw, errdefs.Conflict("resize the terminal: %v", err))
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleLogs(rw http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b := w.box(id)
	if b == nil {
		httpapi.WriteError(rw, errdefs.NotFound("sandbox %s has no logs on this worker (it ended more than %v ago, or never ran)", id, keepFinished))
		return
	}
	b.mu.Lock()
	p := b.execs["main"]
	b.mu.Unlock()
	n := httpapi.StartNDJSON(rw)
	if p == nil {
		return
	}
	follow := r.URL.Query().Get("follow") == "1" || r.URL.Query().Get("follow") == "true"
	// Logs keeps a window of the last MiB. next is the (absolute) index of the next chunk this
	// stream sends, and nextByte its offset in the output; -1: start at the window.
	next, nextByte := int64(-1), int64(0)
	for {
		win, exit, changed := p.Logs()
		if next < 0 {
			next, nextByte = win.First, win.Dropped
		}
		if next < win.First {
			// A follower that fell behind the window is told what it missed.
			if n.Send(chunkLine(container.DropMarker(win.Dropped-nextByte))) != nil {
				return
			}
			next, nextByte = win.First, win.Dropped
		}
		for _, ch := range win.Chunks[next-win.First:] {
			if n.Send(chunkLine(ch)) != nil {
				return
			}
			next++
			nextByte += int64(len(ch.Data))
		}
		if !follow || exit != nil {
			if exit != nil && follow {
				// The last line; if the client has gone, nobody is left to tell.
				_ = n.Send(workerproto.ExitLine{ExitCode: exit.ExitCode, Error: exit.Error})
			}
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// fileOp runs one file operation, mapping init's error kinds to API errors.
func (w *Worker) fileOp(r *http.Request, req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte, error) {
	p, err := sandbox.CleanPath(req.Path)
	if err != nil {
		return initproto.FileResponse{}, nil, err
	}
	req.Path = p
	_, c, err := w.running(r.PathValue("id"))
	if err != nil {
		return initproto.FileResponse{}, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	resp, out, err := c.FileOp(ctx, req, data)
	if errors.Is(err, container.ErrStopped) {
		return resp, nil, errdefs.Conflict("sandbox %s stopped during the file operation", r.PathValue("id"))
	}
	if err != nil {
		return resp, nil, err
	}
	if resp.Error != "" {
		return resp, nil, errdefs.WithKind(errdefs.FromKind(resp.ErrorKind), resp.Error)
	}
	return resp, out, nil
}

func (w *Worker) handleReadFile(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	off, length := queryInt(q.Get("offset")), queryInt(q.Get("length"))
	if off < 0 || length < 0 {
		httpapi.WriteError(rw, errdefs.Invalid("offset and length must not be negative"))
		return
	}
	_, data, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpRead, Path: q.Get("path"), Offset: off, Length: length}, nil)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	rw.Header().Set("Content-Type", "application/octet-stream")
	rw.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if _, err := rw.Write(data); err != nil {
		w.log.Printf("sandbox %s: sending %s: %v", r.PathValue("id"), q.Get("path"), err)
	}
}

// queryInt reads an optional integer parameter: absent (or not a number) is 0.
func queryInt(v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (w *Worker) handleWriteFile(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.ContentLength > initproto.MaxFileBytes {
		httpapi.WriteError(rw, errdefs.TooLarge("file of %d bytes is above the 64 MiB limit of one write; write it in parts with append", r.ContentLength))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, initproto.MaxFileBytes+1))
	if err != nil {
		httpapi.WriteError(rw, errdefs.Invalid("reading body: %v", err))
		return
	}
	if len(data) > initproto.MaxFileBytes {
		httpapi.WriteError(rw, errdefs.TooLarge("file is above the 64 MiB limit of one write; write it in parts with append"))
		return
	}
	var mode uint64
	if m := q.Get("mode"); m != "" {
		if mode, err = strconv.ParseUint(m, 8, 32); err != nil || mode > 0o7777 {
			httpapi.WriteError(rw, errdefs.Invalid("mode must be octal permission bits like 0644, got %q", m))
			return
		}
	}
	appendMode := q.Get("append") == "1" || q.Get("append") == "true"
	if _, _, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpWrite, Path: q.Get("path"), Append: appendMode, Mode: uint32(mode)}, data); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleRemove(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rec := q.Get("recursive") == "1" || q.Get("recursive") == "true"
	// A path CleanPath refuses is refused with its reason by fileOp below.
	if p, err := sandbox.CleanPath(q.Get("path")); err == nil && p == "/" {
		httpapi.WriteError(rw, errdefs.Invalid("refusing to remove / of the sandbox; terminate the sandbox instead"))
		return
	}
	if _, _, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpRemove, Path: q.Get("path"), Recursive: rec}, nil); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleList(rw http.ResponseWriter, r *http.Request) {
	resp, _, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpList, Path: r.URL.Query().Get("path")}, nil)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	entries := make([]fileStat, 0, len(resp.Entries))
	for _, e := range resp.Entries {
		entries = append(entries, toStat(e))
	}
	httpapi.WriteJSON(rw, http.StatusOK, map[string]any{"entries": entries})
}

func (w *Worker) handleStat(rw http.ResponseWriter, r *http.Request) {
	resp, _, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpStat, Path: r.URL.Query().Get("path")}, nil)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if resp.Stat == nil {
		httpapi.WriteError(rw, fmt.Errorf("gust-init returned no stat"))
		return
	}
	httpapi.WriteJSON(rw, http.StatusOK, toStat(*resp.Stat))
}

type fileStat struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Type  string `json:"type"`
	Size  int64  `json:"size"`
	Mode  uint32 `json:"mode"`
	MTime string `json:"mtime"`
}

func toStat(s initproto.FileStat) fileStat {
	return fileStat{Name: s.Name, Path: s.Path, Type: s.Type, Size: s.Size, Mode: s.Mode,
		MTime: time.Unix(0, s.MTime).UTC().Format(time.RFC3339Nano)}
}

func (w *Worker) handleMkdir(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		Path    string `json:"path"`
		Parents bool   `json:"parents"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if _, _, err := w.fileOp(r, initproto.FileRequest{Op: initproto.OpMkdir, Path: req.Path, Parents: req.Parents}, nil); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Worker) handleSnapshot(rw http.ResponseWriter, r *http.Request) {
	_, c, err := w.running(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	upper, err := c.UpperDir()
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	dir, err := w.layers.Snapshot(upper, ids.New(ids.Snapshot))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	httpapi.WriteJSON(rw, http.StatusOK, workerproto.SnapshotResponse{Layer: dir, SizeBytes: image.DirSize(dir)})
}
