package worker

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/workerproto"
)

// eventQueue batches function events for the server: whatever gathers while one POST is in
// flight goes in the next.
type eventQueue struct {
	server  Server
	log     *log.Logger
	mu      sync.Mutex
	pending []workerproto.Event
	wake    chan struct{}
	sendMu  sync.Mutex
}

func newEventQueue(server Server, logger *log.Logger) *eventQueue {
	return &eventQueue{server: server, log: logger, wake: make(chan struct{}, 1)}
}

func (q *eventQueue) push(ev workerproto.Event) {
	ev, ok := q.fitEvent(ev)
	if !ok {
		return
	}
	q.mu.Lock()
	q.pending = append(q.pending, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			q.flush()
			return
		case <-q.wake:
			q.flush()
		}
	}
}

// Sending a batch is tried sendTries times, sendRetryWait apart.
const (
	sendTries     = 50
	sendRetryWait = 200 * time.Millisecond
)

// flush sends everything pending now, and returns once it is sent (or given up on).
func (q *eventQueue) flush() {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, part := range splitBatch(batch, maxBatchBytes) {
			q.send(part)
		}
	}
}

// A batch is cut once its payloads pass maxBatchBytes, so that no POST nears the server's
// limit on a batch (internal/api, 256 MiB of JSON). One output above maxEventBytes (base64
// makes it a third larger on the wire) cannot be sent at all: it becomes a failure saying so.
const (
	maxBatchBytes = 16 << 20
	maxEventBytes = 160 << 20
)

func eventBytes(ev workerproto.Event) int {
	return len(ev.Data) + len(ev.Exc) + len(ev.Traceback) + len(ev.Error)
}

// splitBatch cuts a batch into parts of about max payload bytes, in order; an event larger
// than max goes alone.
func splitBatch(batch []workerproto.Event, max int) [][]workerproto.Event {
	var parts [][]workerproto.Event
	start, size := 0, 0
	for i, ev := range batch {
		n := eventBytes(ev)
		if i > start && size+n > max {
			parts = append(parts, batch[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(parts, batch[start:])
}

// fitEvent replaces an output too large to send with a failure that says so; an item or log
// line that large is dropped (and logged here).
func (q *eventQueue) fitEvent(ev workerproto.Event) (workerproto.Event, bool) {
	n := eventBytes(ev)
	if n <= maxEventBytes {
		return ev, true
	}
	if ev.Type != workerproto.EventOutput {
		q.log.Printf("container %s: dropped a %s event of %d MiB (the limit is %d MiB)", ev.ContainerID, ev.Type, n>>20, maxEventBytes>>20)
		return ev, false
	}
	return workerproto.Event{ContainerID: ev.ContainerID, Type: ev.Type, InputID: ev.InputID, Status: workerproto.StatusFailure,
		Runtime: ev.Runtime, Error: fmt.Sprintf("the function's result is %d MiB, above the %d MiB a result may be; return large data through files or a volume", n>>20, maxEventBytes>>20)}, true
}

func (q *eventQueue) send(batch []workerproto.Event) {
	var err error
	for i := 0; i < sendTries; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = q.server.SendEvents(ctx, batch)
		cancel()
		if err == nil {
			return
		}
		q.log.Printf("sending %d function event(s): %v; retrying", len(batch), err)
		time.Sleep(sendRetryWait)
	}
	q.log.Printf("gave up sending %d function event(s) after %d tries: %v", len(batch), sendTries, err)
}
