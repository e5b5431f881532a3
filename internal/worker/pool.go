package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/network"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// warmPool keeps containers started ahead of demand for the image most recently asked for, so
// that creating a sandbox takes one from the pool instead of waiting for the runtime. Only
// sandboxes with the default resources, the runc runtime and a network (not block_network) are
// served from it (poolable): their spec is the pool's. The pool refills in the background after each take.
type warmPool struct {
	w    *Worker
	size int

	mu      sync.Mutex
	key     string   // isolation + layers the pool is warm for
	layers  []string // of key
	ready   []warm
	filling bool
	closed  bool
}

// warm is a pooled container and its network namespace (nil without a worker network),
// whose policy blocks everything until a sandbox takes it.
type warm struct {
	c     Container
	lease NetLease
}

// drop removes a pooled container and releases its namespace.
func (p *warmPool) drop(wc warm) {
	p.w.remove(wc.c, "(warm pool)")
	if wc.lease != nil {
		if err := wc.lease.Release(); err != nil {
			p.w.log.Printf("warm pool: %v", err)
		}
	}
}

func poolKey(isolation string, layers []string) string {
	return isolation + "|" + strings.Join(layers, ":")
}

// poolable reports whether a container can be a pooled one: a plain sandbox with the pool's
// spec.
func poolable(spec workerproto.ContainerSpec) bool {
	return spec.Function == nil && spec.Isolation == sandbox.IsolationRunc && !spec.BuildEgress && len(spec.GPUs) == 0 && !spec.Network.BlockNetwork &&
		spec.CPU == sandbox.DefaultCPU && spec.CPULimit == spec.CPU && spec.MemoryMiB == sandbox.DefaultMemoryMiB
}

// take returns a warm container for the spec and its network namespace (whose policy the
// caller sets), or nil. Either way it makes the pool warm for this image from now on.
func (p *warmPool) take(spec workerproto.ContainerSpec) (Container, NetLease) {
	if p == nil || p.size == 0 || !poolable(spec) || len(spec.Volumes) > 0 {
		return nil, nil
	}
	layers := spec.ImageLayers
	key := poolKey(spec.Isolation, layers)
	p.mu.Lock()
	var got *warm
	var stale []warm
	if p.key != key {
		stale, p.ready = p.ready, nil
		p.key, p.layers = key, layers
	}
	for len(p.ready) > 0 && got == nil {
		wc := p.ready[0]
		p.ready = p.ready[1:]
		select {
		case <-wc.c.Done(): // died while waiting: drop it
			stale = append(stale, wc)
		default:
			got = &wc
		}
	}
	p.mu.Unlock()
	for _, s := range stale {
		p.drop(s)
	}
	p.fill()
	if got == nil {
		return nil, nil
	}
	return got.c, got.lease
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
			wc, err := p.make(layers)
			if err != nil {
				p.w.log.Printf("warm pool: making a container (the pool stays short until the next take): %v", err)
				return
			}
			p.mu.Lock()
			if p.closed || p.key != key {
				p.mu.Unlock()
				p.drop(wc)
				continue
			}
			p.ready = append(p.ready, wc)
			p.mu.Unlock()
		}
	}()
}

// make starts one pooled container, in a namespace of the worker's network whose policy blocks
// everything until a sandbox takes it.
func (p *warmPool) make(layers []string) (warm, error) {
	id := ids.New(ids.Warm)
	opts := container.CreateOptions{
		ID: id, Isolation: sandbox.IsolationRunc, Layers: layers,
		CPU: sandbox.DefaultCPU, CPULimit: sandbox.DefaultCPU, MemoryMiB: sandbox.DefaultMemoryMiB, DiskMiB: p.w.cfg.DiskMiB,
		Logf: p.w.log.Printf,
	}
	var lease NetLease
	if p.w.net != nil {
		l, err := p.w.net.Take(id, network.Policy{Block: true})
		if err != nil {
			return warm{}, err
		}
		lease = l
		opts.NetNSPath = l.NetNSPath()
		opts.Mounts = []container.Mount{{Source: p.w.net.ResolvConf(), Destination: "/etc/resolv.conf"}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := p.w.rt.Create(ctx, opts)
	if err != nil {
		if lease != nil {
			_ = lease.Release() // nothing joined it; the create's error is the one to report
		}
		return warm{}, err
	}
	return warm{c, lease}, nil
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
	for _, wc := range ready {
		p.drop(wc)
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
