package container

import (
	"bytes"
	"context"
	"testing"

	"github.com/gust-run/gust/internal/initproto"
)

// newTestProcess is a Process whose container only gathers credits (no init behind it).
// A main process keeps logs; one that is not followed also keeps only a window of its output.
func newTestProcess(main, followed bool) (*Process, *Container) {
	c := &Container{credits: map[uint32]int{}, creditWake: make(chan struct{}, 1)}
	p := &Process{c: c, ch: 7, window: main && !followed, changed: make(chan struct{})}
	if main {
		p.log = &tailBuffer{max: 1 << 20}
	}
	return p, c
}

func next(t *testing.T, p *Process) []Chunk {
	t.Helper()
	chunks, _, err := p.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return chunks
}

func TestProcessOutputBounds(t *testing.T) {
	chunk := bytes.Repeat([]byte("y\n"), 16<<10) // 32 KiB, as init sends
	tests := []struct {
		name      string
		main      bool
		followed  bool // a function runner: the worker reads it itself
		send      int  // bytes sent with nobody reading
		wantDrop  bool
		maxKept   int
		creditNow bool // credit given back as output arrives, before anyone reads
	}{
		{name: "exec within the window keeps every byte", send: initproto.OutputWindow, maxKept: execKeep},
		{name: "exec over its bound (init ignoring the window) drops the oldest", send: 16 << 20, wantDrop: true, maxKept: execKeep},
		{name: "main keeps a window and credits at once", main: true, send: 16 << 20, wantDrop: true, maxKept: mainKeep, creditNow: true},
		{name: "main within its window keeps every byte", main: true, send: mainKeep / 2, maxKept: mainKeep, creditNow: true},
		{name: "a followed main (function runner) is under flow control", main: true, followed: true, send: initproto.OutputWindow, maxKept: execKeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := newTestProcess(tt.main, tt.followed)
			for sent := 0; sent < tt.send; sent += len(chunk) {
				p.add(Chunk{Data: chunk})
			}
			c.mu.Lock()
			credited := c.credits[p.ch]
			c.mu.Unlock()
			if tt.creditNow != (credited == tt.send) {
				t.Fatalf("credited %d of %d bytes before any read; want them credited: %v", credited, tt.send, tt.creditNow)
			}
			if p.pendingBytes > tt.maxKept {
				t.Fatalf("holds %d bytes, above its bound of %d", p.pendingBytes, tt.maxKept)
			}
			if tt.main && p.logBytes > p.log.max {
				t.Fatalf("log holds %d bytes, above its bound of %d", p.logBytes, p.log.max)
			}
			chunks := next(t, p)
			var dropped int64
			kept := 0
			for i, ch := range chunks {
				if ch.Dropped > 0 {
					if i != 0 || !ch.Stderr || !bytes.Contains(ch.Data, []byte("bytes of output dropped: nobody was reading")) {
						t.Fatalf("marker %d %+q: want one, first, on stderr, in words", i, ch.Data)
					}
					dropped = ch.Dropped
					continue
				}
				kept += len(ch.Data)
			}
			if tt.wantDrop != (dropped > 0) {
				t.Fatalf("dropped %d; want a drop: %v", dropped, tt.wantDrop)
			}
			if int(dropped)+kept != tt.send {
				t.Fatalf("kept %d + dropped %d = %d; want every byte sent (%d) accounted for", kept, dropped, int(dropped)+kept, tt.send)
			}
			if !tt.creditNow {
				c.mu.Lock()
				credited = c.credits[p.ch]
				c.mu.Unlock()
				if credited != tt.send {
					t.Fatalf("credited %d after the read; want %d", credited, tt.send)
				}
			}
		})
	}
}

// TestProcessUnreadKeepsMarker: output a reader took but could not deliver comes back, the
// drop marker with it, and small writes are gathered into few chunks.
func TestProcessUnreadKeepsMarker(t *testing.T) {
	p, _ := newTestProcess(false, false)
	for i := 0; i < 10000; i++ {
		p.add(Chunk{Data: []byte("x")})
	}
	chunks := next(t, p)
	if len(chunks) != 1 || len(chunks[0].Data) != 10000 {
		t.Fatalf("10000 one-byte writes came out as %d chunks; want one of 10000 bytes", len(chunks))
	}
	p.mu.Lock()
	p.dropped = 5
	p.mu.Unlock()
	p.add(Chunk{Data: []byte("z")})
	chunks = next(t, p)
	if len(chunks) != 2 || chunks[0].Dropped != 5 || string(chunks[1].Data) != "z" {
		t.Fatalf("got %+v; want the marker for 5 bytes, then z", chunks)
	}
	p.Unread(chunks)
	again := next(t, p)
	if len(again) != 2 || again[0].Dropped != 5 || string(again[1].Data) != "z" {
		t.Fatalf("after Unread got %+v; want the same two chunks", again)
	}
}

// TestLogWindow: the main process's log window says where it starts, so that a follower that
// fell behind knows what it missed.
func TestLogWindow(t *testing.T) {
	p, _ := newTestProcess(true, false)
	chunk := bytes.Repeat([]byte("y\n"), 16<<10)
	const chunks = 128 // 4 MiB
	for i := 0; i < chunks; i++ {
		p.add(Chunk{Data: chunk})
	}
	win, _, _ := p.Logs()
	kept := 0
	for _, c := range win.Chunks {
		kept += len(c.Data)
	}
	if win.First == 0 || int(win.First)+len(win.Chunks) != chunks || int(win.Dropped)+kept != chunks*len(chunk) || kept > 1<<20 {
		t.Fatalf("window from chunk %d (%d chunks, %d bytes kept, %d dropped); want the last MiB of %d chunks, accounted for",
			win.First, len(win.Chunks), kept, win.Dropped, chunks)
	}
}
