package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gust-run/gust/internal/initproto"
)

// ErrStopped is returned for operations on a container whose init has gone.
var ErrStopped = errors.New("container is not running")

// Container is a running container and the worker's end of its gust-init connection.
type Container struct {
	ID        string
	isolation string
	bundle    string
	rt        *Runtime
	opts      CreateOptions

	w             *initproto.Writer
	in, out, errR *os.File
	ready, done   chan struct{}
	closeOnce     sync.Once
	removeOnce    sync.Once
	doneOnce      sync.Once
	viewOnce      sync.Once // UpperDir's idmapped view
	viewErr       error
	pidOnce       sync.Once // InitPID
	pid           int
	pidErr        error

	mu      sync.Mutex
	next    uint32
	procs   map[uint32]*Process
	files   map[uint32]chan fileResult
	oomSeen int
	// credits is output each exec channel's reader is done with, not yet given back to init
	// (initproto.Credit); creditWake wakes sendCredits.
	credits    map[uint32]int
	creditWake chan struct{}
}

type fileResult struct {
	resp initproto.FileResponse
	data []byte
	err  error
}

func newContainer(opts CreateOptions, in, out, errR *os.File, rt *Runtime, bundle string) *Container {
	c := &Container{
		ID: opts.ID, isolation: opts.Isolation, bundle: bundle, rt: rt, opts: opts,
		w: initproto.NewWriter(in), in: in, out: out, errR: errR,
		ready: make(chan struct{}), done: make(chan struct{}),
		procs: map[uint32]*Process{}, files: map[uint32]chan fileResult{},
		credits: map[uint32]int{}, creditWake: make(chan struct{}, 1),
	}
	go c.readLoop()
	go c.sendCredits()
	return c
}

// credit gives n bytes of a channel's output window back to init. The frames go out from
// sendCredits, gathered: never from the reader of init's frames, which must not wait on init's
// stdin while init may be waiting on its stdout.
func (c *Container) credit(ch uint32, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.credits[ch] += n
	c.mu.Unlock()
	select {
	case c.creditWake <- struct{}{}:
	default:
	}
}

// sendCredits writes the credits gathered until init has gone.
func (c *Container) sendCredits() {
	for {
		select {
		case <-c.done:
			return
		case <-c.creditWake:
		}
		c.mu.Lock()
		credits := c.credits
		c.credits = map[uint32]int{}
		c.mu.Unlock()
		for ch, n := range credits {
			for n > 0 {
				k := min(n, initproto.OutputWindow) // fits the frame's uint32 with room to spare
				if err := c.w.Write(initproto.Credit, ch, initproto.CreditPayload(uint32(k))); err != nil {
					return // init has gone: nobody is left to send to
				}
				n -= k
			}
		}
	}
}

// Done is closed once init has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

func (c *Container) closePipes() {
	c.closeOnce.Do(func() { closePipeEnds(c.in, c.errR) })
}

func (c *Container) readLoop() {
	r := initproto.NewReader(bufio.NewReaderSize(c.out, 64<<10))
	for {
		f, err := r.Read()
		if err != nil {
			break
		}
		switch f.Type {
		case initproto.Ready:
			select {
			case <-c.ready:
			default:
				close(c.ready)
			}
		case initproto.Stdout, initproto.Stderr:
			if p := c.proc(f.Channel); p != nil {
				p.add(Chunk{Stderr: f.Type == initproto.Stderr, Data: f.Payload})
			}
		case initproto.Exit:
			var info initproto.ExitInfo
			if err := json.Unmarshal(f.Payload, &info); err != nil {
				info = initproto.ExitInfo{ExitCode: 255, Error: "bad exit frame from gust-init"}
			}
			c.mu.Lock()
			p := c.procs[f.Channel]
			delete(c.procs, f.Channel)
			c.mu.Unlock()
			if p != nil {
				p.finish(c.annotate(info))
			}
		case initproto.FileDone:
			c.mu.Lock()
			ch := c.files[f.Channel]
			delete(c.files, f.Channel)
			c.mu.Unlock()
			if ch != nil {
				var res fileResult
				res.data, res.err = initproto.Unpack(f.Payload, &res.resp)
				ch <- res
			}
		case initproto.Log:
			c.opts.Logf("gust-init %s: %s", c.ID, strings.TrimSpace(string(f.Payload)))
		}
	}
	closePipeEnds(c.out)
	c.mu.Lock()
	procs := c.procs
	c.procs = map[uint32]*Process{}
	files := c.files
	c.files = map[uint32]chan fileResult{}
	c.mu.Unlock()
	stopped := c.annotate(initproto.ExitInfo{ExitCode: 137, Signal: 9, Error: "the sandbox stopped"})
	for _, p := range procs {
		p.finish(stopped)
	}
	for _, ch := range files {
		ch <- fileResult{err: ErrStopped}
	}
	c.mu.Lock()
	c.doneOnce.Do(func() { close(c.done) })
	onExit := c.opts.OnExit
	c.mu.Unlock()
	if onExit != nil {
		onExit()
	}
}

// SetOnExit sets the function called once init has gone (at once if it already has). A
// container started ahead of demand learns whom to tell only when a sandbox takes it.
func (c *Container) SetOnExit(f func()) {
	c.mu.Lock()
	c.opts.OnExit = f
	c.mu.Unlock()
	select {
	case <-c.done:
		f()
	default:
	}
}

// annotate explains a SIGKILL that the kernel's OOM killer sent.
func (c *Container) annotate(info initproto.ExitInfo) initproto.ExitInfo {
	if info.Signal != int(syscall.SIGKILL) {
		return info
	}
	n := c.oomKills()
	c.mu.Lock()
	fresh := n > c.oomSeen
	c.oomSeen = n
	c.mu.Unlock()
	if fresh {
		info.Error = fmt.Sprintf("out of memory: killed by the kernel OOM killer at the sandbox's memory limit of %d MiB", c.opts.MemoryMiB)
	}
	return info
}

// oomKills reads the container cgroup's count of OOM kills, under cgroup v1 or v2.
func (c *Container) oomKills() int {
	cg := c.rt.cfg.cgroupsPath(c.ID)
	for _, f := range []string{"/sys/fs/cgroup/memory" + cg + "/memory.oom_control", "/sys/fs/cgroup" + cg + "/memory.events"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					return n
				}
			}
		}
	}
	return 0
}

func (c *Container) proc(ch uint32) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[ch]
}

func (c *Container) channel() uint32 {
	c.next++
	return c.next
}

// Exec starts a process in the container. A timeout above zero kills it after that long.
func (c *Container) Exec(req initproto.ExecRequest, timeout time.Duration) (*Process, error) {
	select {
	case <-c.done:
		return nil, ErrStopped
	default:
	}
	p := &Process{c: c, window: req.Main && !req.Followed, changed: make(chan struct{})}
	if req.Main {
		p.log = &tailBuffer{max: 1 << 20}
	}
	c.mu.Lock()
	p.ch = c.channel()
	c.procs[p.ch] = p
	c.mu.Unlock()
	if err := c.w.WriteJSON(initproto.ExecStart, p.ch, req); err != nil {
		c.mu.Lock()
		delete(c.procs, p.ch)
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrStopped, err)
	}
	if timeout > 0 {
		p.timer = time.AfterFunc(timeout, func() {
			p.mu.Lock()
			p.timedOut = timeout
			p.mu.Unlock()
			if err := p.Signal(int(syscall.SIGKILL)); err != nil {
				// Init is gone, and the process with it: its exit arrives as the container's.
				c.opts.Logf("container %s: killing an exec after its %v timeout: %v", c.ID, timeout, err)
			}
		})
	}
	return p, nil
}

// FileOp performs one file operation inside the container.
func (c *Container) FileOp(ctx context.Context, req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte, error) {
	payload, err := initproto.Pack(req, data)
	if err != nil {
		return initproto.FileResponse{}, nil, err
	}
	res := make(chan fileResult, 1)
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return initproto.FileResponse{}, nil, ErrStopped
	default:
	}
	ch := c.channel()
	c.files[ch] = res
	c.mu.Unlock()
	if err := c.w.Write(initproto.FileOp, ch, payload); err != nil {
		c.mu.Lock()
		delete(c.files, ch)
		c.mu.Unlock()
		return initproto.FileResponse{}, nil, fmt.Errorf("%w: %v", ErrStopped, err)
	}
	select {
	case r := <-res:
		return r.resp, r.data, r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.files, ch)
		c.mu.Unlock()
		return initproto.FileResponse{}, nil, ctx.Err()
	}
}

// Chunk is a piece of a process's output.
type Chunk struct {
	Stderr bool
	Data   []byte
	// Dropped is set on a marker chunk (on stderr, its Data the same in words): this many bytes
	// of output were dropped here because nobody read them in time.
	Dropped int64
}

// DropMarker is the chunk that stands where n bytes of output were dropped.
func DropMarker(n int64) Chunk {
	return Chunk{Stderr: true, Dropped: n, Data: []byte(fmt.Sprintf("[gust: %d bytes of output dropped: nobody was reading]\n", n))}
}

// How much unread output the worker holds per process. Every byte of it is memory of the
// worker's, so each is bounded; what does not fit is dropped oldest first, counted, and
// announced to the next reader by a DropMarker.
//
//   - An exec's output is under flow control (initproto.OutputWindow): init sends no more than
//     the window until a reader takes some, and the process blocks in write meanwhile, so a
//     reader who comes late still gets every byte. execKeep is the window twice over (output a
//     reader took and could not deliver comes back with Unread) and a little more; it is a
//     bound only a misbehaving init reaches, which code in the sandbox may be.
//   - The main process must not block because nobody reads it (a server that logs would stop),
//     so its output is credited back as it arrives and kept as a window of the latest mainKeep
//     bytes, like its logs.
const (
	execKeep = 2*initproto.OutputWindow + 256<<10
	mainKeep = 1 << 20
	// chunkCost is what a chunk costs beyond its data, so that many tiny chunks are bounded too.
	chunkCost = 64
	// Chunks under coalesceSmall are gathered into chunks of up to coalesceMax.
	coalesceSmall = 4 << 10
	coalesceMax   = 64 << 10
)

// Process is a process running in a container. Its output is held until read: Next hands each
// chunk out once.
type Process struct {
	c      *Container
	ch     uint32
	window bool // kept as a window of the latest output, credited at once (see mainKeep)

	mu           sync.Mutex
	pending      []Chunk
	pendingBytes int   // data and chunkCost of pending
	dropped      int64 // bytes dropped since the last Next, announced at the front of the next
	owed         int   // output received and not yet credited back to init (execs only)
	exit         *initproto.ExitInfo
	changed      chan struct{}
	log          *tailBuffer // main process only: the last MiB, for logs
	logChunks    []Chunk
	logBytes     int
	logFirst     int64 // chunks dropped from the front of logChunks, so far
	logDropped   int64 // their bytes
	timer        *time.Timer
	timedOut     time.Duration
}

func (p *Process) add(ch Chunk) {
	p.mu.Lock()
	if p.log != nil {
		p.keepLog(ch)
	}
	if !p.window {
		p.owed += len(ch.Data)
	}
	p.queueLocked(ch)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.window {
		// Kept as a window (see mainKeep): init may send on at once.
		p.c.credit(p.ch, len(ch.Data))
	}
}

// queueLocked appends a chunk to the unread output, dropping the oldest beyond the bound.
func (p *Process) queueLocked(ch Chunk) {
	keep := execKeep
	if p.window {
		keep = mainKeep
	}
	// Small writes are gathered, so that output arriving in many tiny frames costs about its
	// size. Not for a main process, whose chunks are shared with its log window.
	if n := len(p.pending); p.log == nil && n > 0 && len(ch.Data) < coalesceSmall && p.pending[n-1].Stderr == ch.Stderr &&
		p.pending[n-1].Dropped == 0 && len(p.pending[n-1].Data)+len(ch.Data) <= coalesceMax {
		p.pending[n-1].Data = append(p.pending[n-1].Data, ch.Data...)
		p.pendingBytes += len(ch.Data)
	} else {
		p.pending = append(p.pending, ch)
		p.pendingBytes += len(ch.Data) + chunkCost
	}
	if p.pendingBytes <= keep {
		return
	}
	// Over the bound: drop the oldest quarter at once, so the copy happens rarely.
	drop := 0
	for drop < len(p.pending) && p.pendingBytes > keep*3/4 {
		c := p.pending[drop]
		p.pendingBytes -= len(c.Data) + chunkCost
		if c.Dropped == 0 {
			p.dropped += int64(len(c.Data))
		} else {
			p.dropped += c.Dropped // a marker put back by Unread
		}
		drop++
	}
	p.pending = append([]Chunk(nil), p.pending[drop:]...)
}

// keepLog remembers recent output of the main process for `logs`, bounded to a MiB. The
// running total keeps it constant-time per chunk: a function runner sends thousands a second.
func (p *Process) keepLog(ch Chunk) {
	p.logChunks = append(p.logChunks, ch)
	p.logBytes += len(ch.Data) + chunkCost
	if p.logBytes <= p.log.max {
		return
	}
	// Over the bound: drop the oldest quarter at once, so the copy happens rarely.
	drop := 0
	for drop < len(p.logChunks)-1 && p.logBytes > p.log.max*3/4 {
		p.logBytes -= len(p.logChunks[drop].Data) + chunkCost
		p.logDropped += int64(len(p.logChunks[drop].Data))
		drop++
	}
	p.logFirst += int64(drop)
	if drop > 0 {
		p.logChunks = append([]Chunk(nil), p.logChunks[drop:]...)
	}
}

func (p *Process) finish(info initproto.ExitInfo) {
	p.mu.Lock()
	if p.exit != nil {
		p.mu.Unlock()
		return
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.timedOut > 0 {
		info = initproto.ExitInfo{ExitCode: 124, Signal: info.Signal, Error: fmt.Sprintf("exec timed out after %v", p.timedOut)}
	}
	p.exit = &info
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Next waits for output or the exit and returns what is new, after a DropMarker if output was
// dropped since the last call. exit is set, after the last chunk, once the process has ended.
// Output it returns is credited back to init, which may then send more.
func (p *Process) Next(ctx context.Context) (chunks []Chunk, exit *initproto.ExitInfo, err error) {
	for {
		p.mu.Lock()
		if len(p.pending) > 0 || p.dropped > 0 || p.exit != nil {
			chunks, p.pending, p.pendingBytes = p.pending, nil, 0
			if p.dropped > 0 {
				chunks = append([]Chunk{DropMarker(p.dropped)}, chunks...)
				p.dropped = 0
			}
			exit = p.exit
			owed := p.owed
			p.owed = 0
			p.mu.Unlock()
			if owed > 0 {
				p.c.credit(p.ch, owed)
			}
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

// Unread puts chunks that Next returned but the caller could not deliver back at the front,
// so that a client that reconnects still gets them.
func (p *Process) Unread(chunks []Chunk) {
	if len(chunks) == 0 {
		return
	}
	p.mu.Lock()
	n := 0
	for _, c := range chunks {
		n += len(c.Data) + chunkCost
	}
	p.pending = append(append([]Chunk(nil), chunks...), p.pending...)
	p.pendingBytes += n
	p.mu.Unlock()
}

// LogWindow is the kept output of a main process: Chunks are its output from its First-th
// chunk on (counting from 0 at its start); the Dropped bytes before them are no longer kept.
type LogWindow struct {
	Chunks  []Chunk
	First   int64
	Dropped int64
}

// Logs returns the kept output of the main process and a channel closed on the next change.
func (p *Process) Logs() (LogWindow, *initproto.ExitInfo, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return LogWindow{Chunks: append([]Chunk(nil), p.logChunks...), First: p.logFirst, Dropped: p.logDropped}, p.exit, p.changed
}

// Exit returns the exit information, or nil while running.
func (p *Process) Exit() *initproto.ExitInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Wait waits for the process to end.
func (p *Process) Wait(ctx context.Context) (*initproto.ExitInfo, error) {
	for {
		p.mu.Lock()
		if p.exit != nil {
			e := p.exit
			p.mu.Unlock()
			return e, nil
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// WriteStdin sends bytes to the process's stdin.
func (p *Process) WriteStdin(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 1<<20)
		if err := p.c.w.Write(initproto.Stdin, p.ch, b[:n]); err != nil {
			return fmt.Errorf("%w: %v", ErrStopped, err)
		}
		b = b[n:]
	}
	return nil
}

// CloseStdin closes the process's stdin.
func (p *Process) CloseStdin() error { return p.c.w.Write(initproto.StdinClose, p.ch, nil) }

// Signal sends a signal to the process group.
func (p *Process) Signal(sig int) error {
	return p.c.w.WriteJSON(initproto.Signal, p.ch, initproto.SignalRequest{Signal: sig})
}

// Resize sets the PTY size.
func (p *Process) Resize(rows, cols uint16) error {
	return p.c.w.WriteJSON(initproto.Resize, p.ch, initproto.ResizeRequest{Rows: rows, Cols: cols})
}
