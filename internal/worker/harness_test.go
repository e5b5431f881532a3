package worker

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/workerproto"
)

// The test harness: a fake server, a layer store in a directory, and a worker on fakes.

// fakeServer records what the worker tells it, in order, and hands out assignments.
type fakeServer struct {
	assign chan []workerproto.Assignment

	mu         sync.Mutex
	id         string
	registered int
	lastReg    workerproto.RegisterRequest
	reports    []stateReport
	events     []workerproto.Event
	sequence   []string // "event <input> <status>" and "state <id> <status>", in arrival order
}

type stateReport struct {
	id string
	workerproto.StateReport
}

func newFakeServer() *fakeServer { return &fakeServer{assign: make(chan []workerproto.Assignment, 16)} }

func (s *fakeServer) Register(ctx context.Context, req workerproto.RegisterRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id = "wk-test"
	s.registered++
	s.lastReg = req
	return nil
}

func (s *fakeServer) Assignments(ctx context.Context, wait time.Duration) ([]workerproto.Assignment, error) {
	select {
	case as := <-s.assign:
		return as, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeServer) ReportState(ctx context.Context, id string, st workerproto.StateReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, stateReport{id, st})
	s.sequence = append(s.sequence, fmt.Sprintf("state %s %s", id, st.Status))
	return nil
}

func (s *fakeServer) SendEvents(ctx context.Context, evs []workerproto.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, evs...)
	for _, ev := range evs {
		if ev.Type == workerproto.EventOutput {
			s.sequence = append(s.sequence, fmt.Sprintf("event %s %s", ev.InputID, ev.Status))
		}
	}
	return nil
}

func (s *fakeServer) WorkerID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// reportsFor returns the states reported for a container.
func (s *fakeServer) reportsFor(id string) []workerproto.StateReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []workerproto.StateReport
	for _, r := range s.reports {
		if r.id == id {
			out = append(out, r.StateReport)
		}
	}
	return out
}

// outputs returns the output events for inputs, by input ID.
func (s *fakeServer) outputs() map[string]workerproto.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]workerproto.Event{}
	for _, ev := range s.events {
		if ev.Type == workerproto.EventOutput {
			out[ev.InputID] = ev
		}
	}
	return out
}

// eventsOf returns the events of a type.
func (s *fakeServer) eventsOf(t workerproto.EventType) []workerproto.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []workerproto.Event
	for _, ev := range s.events {
		if ev.Type == t {
			out = append(out, ev)
		}
	}
	return out
}

func (s *fakeServer) seq() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sequence...)
}

// fakeLayers keeps layers in a directory.
type fakeLayers struct{ dir string }

func (l fakeLayers) LayerPath(hash string) string { return filepath.Join(l.dir, hash) }

func (l fakeLayers) ExtractLayer(sum, remote, hash string) (string, int64, error) {
	dir := l.LayerPath(hash)
	return dir, 0, os.MkdirAll(dir, 0o755)
}

func (l fakeLayers) Snapshot(upper, id string) (string, error) {
	dir := l.LayerPath(id)
	return dir, os.MkdirAll(dir, 0o755)
}

// logBuffer keeps a test worker's log, shown when the test fails: goroutines may still log
// after the test ends, when t.Log no longer may be called.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newTestWorker returns a worker on fakes, its events flowing to the fake server. The test's
// end shuts it down.
func newTestWorker(t *testing.T, rt *fakeRuntime, cfg Config) (*Worker, *fakeServer) {
	t.Helper()
	srv := newFakeServer()
	logs := &logBuffer{}
	dir := t.TempDir()
	cfg.StateDir, cfg.LayerDir, cfg.Name = dir, dir, "test"
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Logger = log.New(logs, "", log.Lmicroseconds)
	w := newWorker(cfg, deps{
		runtime: rt, server: srv, layers: fakeLayers{dir: dir},
		sdk: func() (string, error) { return dir, nil }, compile: func(string) {},
	})
	w.idleTick = 5 * time.Millisecond
	t.Cleanup(func() {
		w.shutdown()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs)
		}
	})
	return w, srv
}

// startEvents runs the worker's event queue until the test ends (Run does it otherwise).
func startEvents(t *testing.T, w *Worker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.events.run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
