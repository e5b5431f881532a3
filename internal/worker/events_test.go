package worker

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/workerproto"
)

func TestSplitBatch(t *testing.T) {
	ev := func(n int) workerproto.Event { return workerproto.Event{Data: make([]byte, n)} }
	for _, tc := range []struct {
		name  string
		sizes []int
		want  []int // events per part
	}{
		{"one small", []int{10}, []int{1}},
		{"fits", []int{40, 50}, []int{2}},
		{"cut", []int{60, 50, 30}, []int{1, 2}},
		{"a large one alone", []int{10, 500, 10}, []int{1, 1, 1}},
		{"empty payloads", []int{0, 0, 0}, []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var batch []workerproto.Event
			for _, n := range tc.sizes {
				batch = append(batch, ev(n))
			}
			parts := splitBatch(batch, 100)
			var got []int
			for _, p := range parts {
				got = append(got, len(p))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("parts %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("parts %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// An output too large for the server becomes a failure that says so, rather than a batch the
// server refuses and the worker retries until it drops it.
func TestOversizedOutputFails(t *testing.T) {
	var logs bytes.Buffer
	q := newEventQueue(nil, log.New(&logs, "", 0))
	out, ok := q.fitEvent(workerproto.Event{ContainerID: "sb-1", Type: workerproto.EventOutput, InputID: "in-1",
		Status: workerproto.StatusSuccess, Data: make([]byte, maxEventBytes+1)})
	if !ok || out.Status != workerproto.StatusFailure || len(out.Data) != 0 || !strings.Contains(out.Error, "MiB") {
		t.Fatalf("got %+v", out)
	}
	if _, ok := q.fitEvent(workerproto.Event{Type: workerproto.EventLog, Data: make([]byte, maxEventBytes+1)}); ok || !strings.Contains(logs.String(), "dropped") {
		t.Fatal("an oversized log line was kept")
	}
	small := workerproto.Event{Type: workerproto.EventOutput, Data: []byte("ok")}
	if got, ok := q.fitEvent(small); !ok || string(got.Data) != "ok" {
		t.Fatal("a small output was changed")
	}
}

// TestEventQueueBounds: log lines that nobody takes are dropped beyond a container's bound and
// announced by a marker line; items wait for room instead.
func TestEventQueueBounds(t *testing.T) {
	q := newEventQueue(nil, log.New(io.Discard, "", 0))
	line := workerproto.Event{ContainerID: "fc-1", Type: workerproto.EventLog, Stream: "stdout", Data: bytes.Repeat([]byte("y"), 1000)}
	for i := 0; i < 10000; i++ { // 10 MB of logs
		q.push(line)
	}
	q.push(workerproto.Event{ContainerID: "fc-2", Type: workerproto.EventLog, Data: []byte("other\n")})
	q.mu.Lock()
	held := q.pendingBytes
	q.mu.Unlock()
	if held > maxPendingLogBytes+len("other\n") {
		t.Fatalf("the queue holds %d bytes of logs; want at most %d", held, maxPendingLogBytes)
	}
	batch := q.take()
	last := batch[len(batch)-1]
	kept := (len(batch) - 2) * 1000
	if last.ContainerID != "fc-1" || !strings.Contains(string(last.Data), fmt.Sprintf("[gust: %d bytes of function logs dropped", 10000*1000-kept)) {
		t.Fatalf("last event %q; want the drop marker for fc-1's %d bytes", last.Data, 10000*1000-kept)
	}
	if len(q.take()) != 0 {
		t.Fatal("the marker came twice")
	}

	item := workerproto.Event{ContainerID: "fc-1", Type: workerproto.EventItem, Data: make([]byte, 1<<20)}
	for i := 0; i < maxPendingBytes>>20; i++ {
		q.pushWait(item)
	}
	pushed := make(chan struct{})
	go func() {
		q.pushWait(item)
		close(pushed)
	}()
	select {
	case <-pushed:
		t.Fatal("an item was queued beyond the bound")
	case <-time.After(100 * time.Millisecond):
	}
	if n := len(q.take()); n != maxPendingBytes>>20 {
		t.Fatalf("took %d items, want %d", n, maxPendingBytes>>20)
	}
	select {
	case <-pushed:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting item was not queued once there was room")
	}
}
