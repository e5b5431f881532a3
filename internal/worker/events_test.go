package worker

import (
	"bytes"
	"log"
	"strings"
	"testing"

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
