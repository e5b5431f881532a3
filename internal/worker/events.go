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
//
// What waits is bounded, because a function can print or yield faster than the server takes
// events: a container's log lines beyond maxPendingLogBytes are dropped (logs must never stop
// the function) and counted, and the count reaches the app's logs as a marker line once there
// is room; items (a generator's yields) wait in pushWait instead, which stops the runner's
// reader and so, by init's flow control, the runner. Outputs are never dropped or held: the
// inputs in flight bound them.
type eventQueue struct {
	server       Server
	log          *log.Logger
	mu           sync.Mutex
	room         *sync.Cond // signalled as pending is taken for sending
	pending      []workerproto.Event
	pendingBytes int
	logBytes     map[string]int // pending log bytes per container
	droppedLogs  map[string]int // log bytes dropped per container, not yet announced
	wake         chan struct{}
	sendMu       sync.Mutex
}

// maxPendingLogBytes bounds one container's waiting log lines; maxPendingBytes is the queue's
// size at which items wait.
const (
	maxPendingLogBytes = 1 << 20
	maxPendingBytes    = 4 << 20
)

func newEventQueue(server Server, logger *log.Logger) *eventQueue {
	q := &eventQueue{server: server, log: logger, wake: make(chan struct{}, 1),
		logBytes: map[string]int{}, droppedLogs: map[string]int{}}
	q.room = sync.NewCond(&q.mu)
	return q
}

func (q *eventQueue) push(ev workerproto.Event) {
	q.pushEvent(ev, false)
}

// pushWait queues ev once the queue is under maxPendingBytes (or empty).
func (q *eventQueue) pushWait(ev workerproto.Event) {
	q.pushEvent(ev, true)
}

func (q *eventQueue) pushEvent(ev workerproto.Event, wait bool) {
	ev, ok := q.fitEvent(ev)
	if !ok {
		return
	}
	n := eventBytes(ev)
	q.mu.Lock()
	for wait && len(q.pending) > 0 && q.pendingBytes+n > maxPendingBytes {
		q.room.Wait()
	}
	if ev.Type == workerproto.EventLog {
		if q.logBytes[ev.ContainerID]+n > maxPendingLogBytes {
			q.droppedLogs[ev.ContainerID] += n
			q.mu.Unlock()
			return
		}
		q.logBytes[ev.ContainerID] += n
	}
	q.pending = append(q.pending, ev)
	q.pendingBytes += n
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take empties the queue, announcing the logs dropped since the last take.
func (q *eventQueue) take() []workerproto.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.pending
	for id, n := range q.droppedLogs {
		batch = append(batch, workerproto.Event{ContainerID: id, Type: workerproto.EventLog, Stream: "stderr",
			Data: fmt.Appendf(nil, "[gust: %d bytes of function logs dropped: the worker could not send them to the server fast enough]\n", n)})
	}
	q.pending, q.pendingBytes = nil, 0
	clear(q.logBytes)
	clear(q.droppedLogs)
	q.room.Broadcast()
	return batch
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
		batch := q.take()
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
