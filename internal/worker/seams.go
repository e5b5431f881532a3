package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/workerproto"
)

// The worker's seams: what it asks of the machine and of the server, as small interfaces. New
// fills them with the real things (internal/container, internal/image and
// workerproto.ServerClient); the package's tests fill them with fakes, so that the worker's
// logic runs without root and without containers.

// Runtime makes and removes containers.
type Runtime interface {
	Create(ctx context.Context, opts container.CreateOptions) (Container, error)
	// Remove stops a container and releases everything it held; calling it again is harmless.
	Remove(c Container) error
	// Available says why an isolation (runc, gvisor) cannot run here, or nil.
	Available(isolation string) error
	// CleanupLeftovers removes what an earlier worker on the same state directory left.
	CleanupLeftovers(logf func(string, ...any))
	// Close releases what the runtime itself holds on the machine, once its containers are gone.
	Close() error
}

// Container is a started container: its init runs processes and file operations.
type Container interface {
	// Done is closed once the container's init has gone.
	Done() <-chan struct{}
	// SetOnExit sets the function called once init has gone (at once if it has already).
	SetOnExit(f func())
	Exec(req initproto.ExecRequest, timeout time.Duration) (Process, error)
	FileOp(ctx context.Context, req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte, error)
	// UpperDir is the container's writable layer as the container sees it (its ids, not the
	// host range of a user namespace), for snapshots.
	UpperDir() (string, error)
	// NetNS is the path of the container's network namespace while it runs.
	NetNS() (string, error)
}

// Process is a process in a container, as container.Process is.
type Process interface {
	// Next waits for output or the exit and returns what is new; exit is set, after the last
	// chunk, once the process has ended.
	Next(ctx context.Context) (chunks []container.Chunk, exit *initproto.ExitInfo, err error)
	Unread(chunks []container.Chunk)
	Logs() (container.LogWindow, *initproto.ExitInfo, <-chan struct{})
	Exit() *initproto.ExitInfo
	Wait(ctx context.Context) (*initproto.ExitInfo, error)
	WriteStdin(b []byte) error
	CloseStdin() error
	Signal(sig int) error
	Resize(rows, cols uint16) error
}

// BuildNet is an image build container's network: a namespace of its own whose only way out
// is the worker's egress proxy (egress.Namespace). The container joins it; the worker closes
// it once the container is gone.
type BuildNet interface {
	NetNSPath() string
	// Env points the container's HTTP clients at the proxy.
	Env() map[string]string
	Close() error
}

// Server is the gust server as a worker sees it.
type Server interface {
	Register(ctx context.Context, req workerproto.RegisterRequest) error
	Assignments(ctx context.Context, wait time.Duration) ([]workerproto.Assignment, error)
	ReportState(ctx context.Context, containerID string, st workerproto.StateReport) error
	SendEvents(ctx context.Context, evs []workerproto.Event) error
	// WorkerID is the ID the server gave this worker, "" before it registered.
	WorkerID() string
}

// Layers is the worker's store of image layers: function code is unpacked there, and
// snapshots are written there.
type Layers interface {
	LayerPath(hash string) string
	ExtractLayer(sum, remote, hash string) (dir string, size int64, err error)
	Snapshot(upper, id string) (string, error)
}

var (
	_ Runtime   = runtimeAdapter{}
	_ Container = containerAdapter{}
	_ Process   = (*container.Process)(nil)
	_ Server    = (*workerproto.ServerClient)(nil)
	_ Layers    = (*image.Builder)(nil)
	_ BuildNet  = (*egress.Namespace)(nil)
)

// runtimeAdapter is container.Runtime behind the Runtime interface.
type runtimeAdapter struct{ rt *container.Runtime }

func (a runtimeAdapter) Create(ctx context.Context, opts container.CreateOptions) (Container, error) {
	c, err := a.rt.Create(ctx, opts)
	if err != nil {
		return nil, err
	}
	return containerAdapter{c}, nil
}

func (a runtimeAdapter) Remove(c Container) error {
	ca, ok := c.(containerAdapter)
	if !ok {
		return fmt.Errorf("container %T was not made by the container runtime", c)
	}
	return a.rt.Remove(ca.Container)
}

func (a runtimeAdapter) Available(isolation string) error { return a.rt.Available(isolation) }

func (a runtimeAdapter) CleanupLeftovers(logf func(string, ...any)) { a.rt.CleanupLeftovers(logf) }

func (a runtimeAdapter) Close() error { return a.rt.Close() }

// containerAdapter is a *container.Container whose Exec returns a Process.
type containerAdapter struct{ *container.Container }

func (c containerAdapter) Exec(req initproto.ExecRequest, timeout time.Duration) (Process, error) {
	p, err := c.Container.Exec(req, timeout)
	if err != nil {
		return nil, err
	}
	return p, nil
}
