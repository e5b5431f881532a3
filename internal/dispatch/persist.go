package dispatch

import (
	"context"
	"sync"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/store"
)

// writer records outputs and log lines in the store. One loop commits whatever has gathered
// in one transaction (group commit): a transaction per output would cap throughput at the
// disk's. An output is in its call's stream before it is in the store; if the server dies in
// between, the input runs again (at least once).
type writer struct {
	e *Engine

	mu    sync.Mutex
	done  []function.Input
	logs  []store.LogLine
	wake  chan struct{}
	flush sync.Mutex // one flush at a time
}

func (w *writer) init(e *Engine) {
	w.e = e
	w.wake = make(chan struct{}, 1)
}

// persist queues outputs and log lines for the store.
func (w *writer) persist(done []function.Input, logs []store.LogLine) {
	if len(done) == 0 && len(logs) == 0 {
		return
	}
	w.mu.Lock()
	w.done = append(w.done, done...)
	w.logs = append(w.logs, logs...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// loop is persist's writer. It outlives the engine's context: outputs reported while the
// worker shuts down are still recorded.
func (w *writer) loop() {
	for range w.wake {
		w.Flush()
	}
}

// Flush commits what persist gathered; it returns once it is in the store.
func (w *writer) Flush() {
	w.flush.Lock()
	defer w.flush.Unlock()
	w.mu.Lock()
	done, logs := w.done, w.logs
	w.done, w.logs = nil, nil
	w.mu.Unlock()
	bg := context.Background()
	if err := w.e.store.FinishInputs(bg, done); err != nil {
		w.e.log.Printf("functions: recording %d output(s): %v", len(done), err)
	}
	if len(logs) == 0 {
		return
	}
	if err := w.e.store.AppendLogs(bg, logs); err != nil {
		w.e.log.Printf("functions: recording %d log line(s): %v", len(logs), err)
	}
	w.e.mu.Lock()
	close(w.e.logsWake)
	w.e.logsWake = make(chan struct{})
	w.e.mu.Unlock()
}

// FlushWrites returns once every output and log line reported so far is in the store.
func (e *Engine) FlushWrites() { e.w.Flush() }

// LogsAppended returns a channel closed when app logs are next appended to the store.
func (e *Engine) LogsAppended() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logsWake
}
