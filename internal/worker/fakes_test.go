package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/initproto"
)

// Fakes of the worker's seams, for tests that need no root and no containers. The fake
// runtime's processes follow a small script chosen by their argv:
//
//	echo TEXT   writes TEXT to stdout and exits 0
//	exit N      exits N after exitDelay
//	sleep       runs until signalled or its container stops
//	python3 …   the function runner: fakeRunner plays gust._runner's JSON-lines protocol
//
// A main process ending ends its container, as gust-init does.

var (
	_ Runtime   = (*fakeRuntime)(nil)
	_ Container = (*fakeContainer)(nil)
	_ Process   = (*fakeProcess)(nil)
	_ Server    = (*fakeServer)(nil)
	_ Layers    = fakeLayers{}
)

// exitDelay lets a worker report a container running before its `exit N` command ends it.
const exitDelay = 20 * time.Millisecond

type fakeRuntime struct {
	// Set before use.
	createErr  error
	createGate chan struct{} // when set, Create waits for it to close
	fileGate   chan struct{} // when set, file operations wait for it to close
	fileErr    string        // when set, file operations fail with it
	runnerMode string        // "" (ready at once), "init-error"
	hold       chan struct{} // inputs "wait" wait for it to close

	entered chan struct{} // receives once per Create call, when it starts

	mu         sync.Mutex
	containers map[string]*fakeContainer
	created    []string // IDs, in order
	removed    map[string]int
	runners    []*fakeRunner
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		entered: make(chan struct{}, 16), hold: make(chan struct{}),
		containers: map[string]*fakeContainer{}, removed: map[string]int{},
	}
}

func (rt *fakeRuntime) Create(ctx context.Context, opts container.CreateOptions) (Container, error) {
	select {
	case rt.entered <- struct{}{}:
	default:
	}
	if rt.createGate != nil {
		select {
		case <-rt.createGate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if rt.createErr != nil {
		return nil, rt.createErr
	}
	c := &fakeContainer{rt: rt, opts: opts, onExit: opts.OnExit, done: make(chan struct{})}
	rt.mu.Lock()
	rt.containers[opts.ID] = c
	rt.created = append(rt.created, opts.ID)
	rt.mu.Unlock()
	return c, nil
}

func (rt *fakeRuntime) Remove(c Container) error {
	fc, ok := c.(*fakeContainer)
	if !ok {
		return fmt.Errorf("not a fake container: %T", c)
	}
	rt.mu.Lock()
	rt.removed[fc.opts.ID]++
	rt.mu.Unlock()
	fc.stop()
	return nil
}

func (rt *fakeRuntime) Available(isolation string) error {
	if isolation == container.IsolationRunc {
		return nil
	}
	return fmt.Errorf("%s is not installed", isolation)
}

func (rt *fakeRuntime) CleanupLeftovers(logf func(string, ...any)) {}

func (rt *fakeRuntime) Close() error { return nil }

func (rt *fakeRuntime) container(id string) *fakeContainer {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.containers[id]
}

func (rt *fakeRuntime) removals(id string) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.removed[id]
}

func (rt *fakeRuntime) runner(i int) *fakeRunner {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if i >= len(rt.runners) {
		return nil
	}
	return rt.runners[i]
}

type fakeContainer struct {
	rt   *fakeRuntime
	opts container.CreateOptions
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	onExit func()
	procs  []*fakeProcess
}

func (c *fakeContainer) Done() <-chan struct{} { return c.done }

func (c *fakeContainer) NetNS() (string, error) {
	return "", fmt.Errorf("a fake container has no network namespace")
}

func (c *fakeContainer) SetOnExit(f func()) {
	c.mu.Lock()
	c.onExit = f
	c.mu.Unlock()
	select {
	case <-c.done:
		f()
	default:
	}
}

// stop is the container's init going away: its processes end with it, and OnExit runs from
// another goroutine, as from the real container's reader.
func (c *fakeContainer) stop() {
	c.once.Do(func() {
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for _, p := range procs {
			p.finish(initproto.ExitInfo{ExitCode: 137, Signal: 9, Error: "the sandbox stopped"})
		}
		c.mu.Lock()
		close(c.done)
		f := c.onExit
		c.mu.Unlock()
		if f != nil {
			go f()
		}
	})
}

func (c *fakeContainer) stopped() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *fakeContainer) Exec(req initproto.ExecRequest, timeout time.Duration) (Process, error) {
	if c.stopped() {
		return nil, container.ErrStopped
	}
	p := &fakeProcess{c: c, req: req, changed: make(chan struct{}), exited: make(chan struct{})}
	var fr *fakeRunner
	if len(req.Argv) > 0 && req.Argv[0] == "python3" {
		fr = &fakeRunner{rt: c.rt, p: p}
		p.onStdin = fr.stdin
		c.rt.mu.Lock()
		c.rt.runners = append(c.rt.runners, fr)
		c.rt.mu.Unlock()
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	if fr != nil {
		go fr.start()
	} else {
		go p.script()
	}
	return p, nil
}

func (c *fakeContainer) FileOp(ctx context.Context, req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte, error) {
	if c.rt.fileGate != nil {
		select {
		case <-c.rt.fileGate:
		case <-c.done:
			return initproto.FileResponse{}, nil, container.ErrStopped
		case <-ctx.Done():
			return initproto.FileResponse{}, nil, ctx.Err()
		}
	}
	if c.stopped() {
		return initproto.FileResponse{}, nil, container.ErrStopped
	}
	if c.rt.fileErr != "" {
		return initproto.FileResponse{Error: c.rt.fileErr, ErrorKind: "invalid"}, nil, nil
	}
	return initproto.FileResponse{}, nil, nil
}

func (c *fakeContainer) UpperDir() (string, error) {
	return filepath.Join(os.TempDir(), "upper-"+c.opts.ID), nil
}

type fakeProcess struct {
	c       *fakeContainer
	req     initproto.ExecRequest
	onStdin func([]byte)
	exited  chan struct{}

	mu      sync.Mutex
	pending []container.Chunk
	logs    []container.Chunk
	exit    *initproto.ExitInfo
	changed chan struct{}
}

// script runs a plain process's argv.
func (p *fakeProcess) script() {
	argv := p.req.Argv
	switch argv[0] {
	case "echo":
		p.add(container.Chunk{Data: []byte(strings.Join(argv[1:], " ") + "\n")})
		p.finish(initproto.ExitInfo{ExitCode: 0})
	case "test-file": // exits 0 if the host file argv[1] exists (readiness probes)
		code := 0
		if _, err := os.Stat(argv[1]); err != nil {
			code = 1
		}
		p.finish(initproto.ExitInfo{ExitCode: code})
	case "exit":
		code, _ := strconv.Atoi(argv[1]) // the tests write the number
		select {
		case <-time.After(exitDelay):
			p.finish(initproto.ExitInfo{ExitCode: code})
		case <-p.exited:
		}
	}
}

func (p *fakeProcess) add(ch container.Chunk) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit != nil {
		return
	}
	p.pending = append(p.pending, ch)
	p.logs = append(p.logs, ch)
	close(p.changed)
	p.changed = make(chan struct{})
}

// emit writes a line to the process's stdout.
func (p *fakeProcess) emit(line string) { p.add(container.Chunk{Data: []byte(line + "\n")}) }

// finish ends the process; a main process's end ends its container.
func (p *fakeProcess) finish(info initproto.ExitInfo) {
	p.mu.Lock()
	if p.exit != nil {
		p.mu.Unlock()
		return
	}
	p.exit = &info
	close(p.exited)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.req.Main {
		go p.c.stop()
	}
}

func (p *fakeProcess) Next(ctx context.Context) ([]container.Chunk, *initproto.ExitInfo, error) {
	for {
		p.mu.Lock()
		if len(p.pending) > 0 || p.exit != nil {
			chunks, exit := p.pending, p.exit
			p.pending = nil
			p.mu.Unlock()
			return chunks, exit, nil
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

func (p *fakeProcess) Unread(chunks []container.Chunk) {
	p.mu.Lock()
	p.pending = append(append([]container.Chunk(nil), chunks...), p.pending...)
	p.mu.Unlock()
}

func (p *fakeProcess) Logs() (container.LogWindow, *initproto.ExitInfo, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return container.LogWindow{Chunks: append([]container.Chunk(nil), p.logs...)}, p.exit, p.changed
}

func (p *fakeProcess) Exit() *initproto.ExitInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

func (p *fakeProcess) Wait(ctx context.Context) (*initproto.ExitInfo, error) {
	select {
	case <-p.exited:
		return p.Exit(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *fakeProcess) WriteStdin(b []byte) error {
	if p.c.stopped() {
		return fmt.Errorf("%w: stdin", container.ErrStopped)
	}
	if p.onStdin != nil {
		p.onStdin(b)
	}
	return nil
}

func (p *fakeProcess) CloseStdin() error {
	if p.c.stopped() {
		return fmt.Errorf("%w: stdin", container.ErrStopped)
	}
	return nil
}

func (p *fakeProcess) Signal(sig int) error {
	if p.c.stopped() {
		return container.ErrStopped
	}
	p.finish(initproto.ExitInfo{ExitCode: 128 + sig, Signal: sig})
	return nil
}

func (p *fakeProcess) Resize(rows, cols uint16) error { return nil }

// fakeRunner plays gust._runner: it says ready, runs each input line in its own goroutine
// (as the runner's threads), and exits at a shutdown line. An input's args say what it does:
//
//	ok          outputs its args at once
//	sleep:DUR   outputs after DUR
//	wait        outputs once the runtime's hold closes
//	hang        never outputs
type fakeRunner struct {
	rt *fakeRuntime
	p  *fakeProcess

	mu          sync.Mutex
	partial     []byte
	got         []string // input IDs, in the order they arrived
	inFlight    int
	maxInFlight int
}

func (fr *fakeRunner) start() {
	if fr.rt.runnerMode == "init-error" {
		fr.p.add(container.Chunk{Stderr: true, Data: []byte("Traceback (most recent call last):\nModuleNotFoundError: No module named 'numpy'\n")})
		fr.p.finish(initproto.ExitInfo{ExitCode: 1})
		return
	}
	fr.p.emit(`{"type":"ready"}`)
}

func (fr *fakeRunner) stdin(b []byte) {
	fr.mu.Lock()
	fr.partial = append(fr.partial, b...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(fr.partial, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, fr.partial[:i])
		fr.partial = fr.partial[i+1:]
	}
	fr.mu.Unlock()
	for _, line := range lines {
		var m struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			Args []byte `json:"args"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			panic(fmt.Sprintf("the worker wrote a line that is not JSON: %q", line))
		}
		switch m.Type {
		case "shutdown":
			go fr.p.finish(initproto.ExitInfo{ExitCode: 0})
		case "input":
			fr.mu.Lock()
			fr.got = append(fr.got, m.ID)
			fr.inFlight++
			fr.maxInFlight = max(fr.maxInFlight, fr.inFlight)
			fr.mu.Unlock()
			go fr.run(m.ID, m.Args)
		}
	}
}

func (fr *fakeRunner) run(id string, args []byte) {
	cmd := string(args)
	switch {
	case cmd == "hang":
		<-fr.p.exited
		return
	case cmd == "wait":
		select {
		case <-fr.rt.hold:
		case <-fr.p.exited:
			return
		}
	case strings.HasPrefix(cmd, "sleep:"):
		d, err := time.ParseDuration(strings.TrimPrefix(cmd, "sleep:"))
		if err != nil {
			panic(err)
		}
		select {
		case <-time.After(d):
		case <-fr.p.exited:
			return
		}
	}
	fr.mu.Lock()
	fr.inFlight--
	fr.mu.Unlock()
	fr.p.emit(fmt.Sprintf(`{"type":"output","id":%q,"status":"success","data":%q,"format":"pickle"}`, id, base64.StdEncoding.EncodeToString(args)))
}

func (fr *fakeRunner) received() []string {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return append([]string(nil), fr.got...)
}

func (fr *fakeRunner) peak() int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.maxInFlight
}
