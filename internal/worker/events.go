package worker

import (
	"context"
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
		q.send(batch)
	}
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
