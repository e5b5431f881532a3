package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// warmPool keeps containers started ahead of demand for the image most recently asked for, so
// that creating a sandbox takes one from the pool instead of waiting for the runtime. Only
// sandboxes with the default resources, the runc runtime and their own network are served
// from it (poolable): their spec is the pool's. The pool refills in the background after each take.
type warmPool struct {
	w    *Worker
	size int

	mu      sync.Mutex
	key     string   // isolation + layers the pool is warm for
	layers  []string // of key
	ready   []Container
	filling bool
	closed  bool
}

func poolKey(isolation string, layers []string) string {
	return isolation + "|" + strings.Join(layers, ":")
}

// poolable reports whether a container can be a pooled one: a plain sandbox with the pool's
// spec.
func poolable(spec workerproto.ContainerSpec) bool {
	return spec.Function == nil && spec.Isolation == sandbox.IsolationRunc && !spec.BuildEgress && len(spec.GPUs) == 0 &&
		spec.CPU == sandbox.DefaultCPU && spec.CPULimit == spec.CPU && spec.MemoryMiB == sandbox.DefaultMemoryMiB
}

// take returns a warm container for the spec, or nil. Either way it makes the pool warm for
// this image from now on.
func (p *warmPool) take(spec workerproto.ContainerSpec) Container {
	if p == nil || p.size == 0 || !poolable(spec) {
		return nil
	}
	layers := spec.ImageLayers
	key := poolKey(spec.Isolation, layers)
	p.mu.Lock()
	var c Container
	var stale []Container
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
		p.w.remove(s, "(warm pool)")
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
				p.w.log.Printf("warm pool: making a container (the pool stays short until the next take): %v", err)
				return
			}
			p.mu.Lock()
			if p.closed || p.key != key {
				p.mu.Unlock()
				p.w.remove(c, "(warm pool)")
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
		p.w.remove(c, "(warm pool)")
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
	p.w.log.Printf("warm pool: a container being made at shutdown was not ready after 5 s; it is removed when it is")
}
