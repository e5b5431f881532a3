package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
)

// warmPool keeps containers started ahead of demand for the image most recently asked for, so
// that creating a sandbox takes one from the pool instead of waiting for the runtime. Only
// sandboxes with the default resources and the runc runtime are served from it: their spec is
// the pool's. The pool refills in the background after each take.
type warmPool struct {
	w    *Worker
	size int

	mu      sync.Mutex
	key     string   // isolation + layers the pool is warm for
	layers  []string // of key
	ready   []*container.Container
	filling bool
	closed  bool
}

func poolKey(isolation string, layers []string) string {
	return isolation + "|" + strings.Join(layers, ":")
}

// poolable reports whether a sandbox can use a pooled container.
func poolable(sb sandbox.Sandbox) bool {
	return sb.Isolation == sandbox.IsolationRunc && !sb.HostNetwork && sb.CPU == sandbox.DefaultCPU &&
		sb.MemoryMiB == sandbox.DefaultMemoryMiB
}

// take returns a warm container for the sandbox, or nil. Either way it makes the pool warm for
// this image from now on.
func (p *warmPool) take(sb sandbox.Sandbox, layers []string) *container.Container {
	if p == nil || p.size == 0 || !poolable(sb) {
		return nil
	}
	key := poolKey(sb.Isolation, layers)
	p.mu.Lock()
	var c *container.Container
	var stale []*container.Container
	if p.key != key {
		stale, p.ready = p.ready, nil
		p.key, p.layers = key, layers
	}
	for len(p.ready) > 0 && c == nil {
		c, p.ready = p.ready[0], p.ready[1:]
		select {
		case <-c.Done(): // died while waiting: drop it
			stale = append(stale, c)
			c = nil
		default:
		}
	}
	p.mu.Unlock()
	for _, s := range stale {
		p.w.rt.Remove(s)
	}
	p.fill()
	return c
}

// fill starts containers until the pool is full; one filler runs at a time.
func (p *warmPool) fill() {
	p.mu.Lock()
	if p.filling || p.closed || p.key == "" {
		p.mu.Unlock()
		return
	}
	p.filling = true
	p.mu.Unlock()
	go func() {
		defer func() {
			p.mu.Lock()
			p.filling = false
			p.mu.Unlock()
		}()
		for {
			p.mu.Lock()
			if p.closed || len(p.ready) >= p.size {
				p.mu.Unlock()
				return
			}
			key, layers := p.key, p.layers
			p.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			c, err := p.w.rt.Create(ctx, container.CreateOptions{
				ID: ids.New(ids.Warm), Isolation: sandbox.IsolationRunc, Layers: layers,
				CPU: sandbox.DefaultCPU, CPULimit: sandbox.DefaultCPU, MemoryMiB: sandbox.DefaultMemoryMiB, DiskMiB: p.w.cfg.DiskMiB,
				Logf: p.w.log.Printf,
			})
			cancel()
			if err != nil {
				p.w.log.Printf("warm pool: %v", err)
				return
			}
			p.mu.Lock()
			if p.closed || p.key != key {
				p.mu.Unlock()
				p.w.rt.Remove(c)
				continue
			}
			p.ready = append(p.ready, c)
			p.mu.Unlock()
		}
	}()
}

// close removes every pooled container.
func (p *warmPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	for _, c := range ready {
		p.w.rt.Remove(c)
	}
	// A filler may be mid-create: wait for it to notice closed and remove what it made.
	for i := 0; i < 200; i++ {
		p.mu.Lock()
		filling := p.filling
		p.mu.Unlock()
		if !filling {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}
