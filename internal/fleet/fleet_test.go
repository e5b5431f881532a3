package fleet

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

func TestRegister(t *testing.T) {
	env := newTestEnv(t)
	a := env.register(t, "a")
	b := env.register(t, "b")
	if a == b {
		t.Fatalf("two workers got the same ID %s", a)
	}
	for _, id := range []string{a, b} {
		if err := env.f.CheckWorker(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.f.CheckWorker("wk-nobody"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("CheckWorker of an unknown worker: %v, want not found", err)
	}
	if _, err := env.f.Register(workerproto.RegisterRequest{Name: "c", APIToken: "0123456789abcdef0123456789abcdef", Addr: "not a url"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("register with a bad addr: %v, want invalid", err)
	}
	if c, err := env.f.Client(sandbox.Sandbox{ID: "sb-1", WorkerID: a}); err != nil || c == nil {
		t.Fatalf("the client of a registered worker: %v, %v", c, err)
	}
	if _, err := env.f.Client(sandbox.Sandbox{ID: "sb-1", WorkerID: "wk-gone"}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("the client of a gone worker: %v, want unavailable", err)
	}
}

// TestRegisterBlip: a worker that lost the server for a moment registers again with its ID
// and keeps it and its containers, even from a new address.
func TestRegisterBlip(t *testing.T) {
	env := newTestEnv(t)
	id := env.register(t, "a")
	sb := env.insert(t, id, "", sandbox.Running)
	resp, err := env.f.Register(workerproto.RegisterRequest{Name: "a", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:2", CPU: 8, MemoryMiB: 8192,
		Isolation: runcOnly, WorkerID: id})
	if err != nil {
		t.Fatal(err)
	}
	if resp.WorkerID != id {
		t.Fatalf("re-registered with ID %s and got %s", id, resp.WorkerID)
	}
	if got := env.get(t, sb.ID); got.Status != sandbox.Running {
		t.Fatalf("its sandbox is %s after a blip, want running", got.Status)
	}
	if _, mem := env.f.Capacity(); mem != 8192 {
		t.Fatalf("capacity %d MiB after re-registering with 8192", mem)
	}
	env.f.mu.Lock()
	n := len(env.f.workers)
	env.f.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d workers after a blip, want 1", n)
	}
	// An ID the fleet no longer knows (it expired meanwhile) gets a new one.
	resp, err = env.f.Register(workerproto.RegisterRequest{Name: "z", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:3", CPU: 4, MemoryMiB: 4096,
		Isolation: runcOnly, WorkerID: "wk-forgotten"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.WorkerID == "wk-forgotten" || resp.WorkerID == "" {
		t.Fatalf("a forgotten worker ID was given back: %q", resp.WorkerID)
	}
}

// TestRegisterRestart: a worker that registers under its name without its ID has restarted.
// What it ran is gone: its containers fail, and the function engine hears of its function
// containers. Other workers' containers are untouched.
func TestRegisterRestart(t *testing.T) {
	env := newTestEnv(t)
	old := env.register(t, "a")
	other := env.register(t, "b")
	sb := env.insert(t, old, "", sandbox.Running)
	pending := env.insert(t, old, "", sandbox.Pending)
	fnc := env.insert(t, old, "fu-1", sandbox.Running)
	done := env.insert(t, old, "", sandbox.Finished)
	elsewhere := env.insert(t, other, "fu-1", sandbox.Running)

	id := env.register(t, "a")
	if id == old {
		t.Fatal("a restarted worker kept its old ID")
	}
	if err := env.f.CheckWorker(old); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the old worker is still registered: %v", err)
	}
	for _, c := range []sandbox.Sandbox{sb, pending, fnc} {
		got := env.get(t, c.ID)
		if got.Status != sandbox.Failed || got.ExitCode == nil || *got.ExitCode != sandbox.ExitTerminated ||
			got.Error == nil || *got.Error != "its worker restarted" || got.FinishedAt == nil {
			t.Errorf("container %s of the restarted worker: %s, exit %v, error %v; want failed, 137, \"its worker restarted\"",
				c.ID, got.Status, got.ExitCode, got.Error)
		}
	}
	if got := env.get(t, done.ID); got.Status != sandbox.Finished {
		t.Errorf("a finished container became %s", got.Status)
	}
	if got := env.get(t, elsewhere.ID); got.Status != sandbox.Running {
		t.Errorf("another worker's container became %s", got.Status)
	}
	if got := env.endedIDs(); !slices.Equal(got, []string{fnc.ID}) {
		t.Errorf("OnContainerEnd heard of %v, want only the function container %s", got, fnc.ID)
	}
	// The restarted worker sends its spool, a final interval for each: the ledger closes them.
	if got := env.lostIDs(); len(got) != 0 {
		t.Errorf("OnLost heard of %v after a restart; want none", got)
	}
}

// TestExpireWorkers: a worker that has not polled for longer than workerTimeout is dropped
// with its containers; one that polled recently, or is in a long poll now, stays.
func TestExpireWorkers(t *testing.T) {
	env := newTestEnv(t)
	stale := env.register(t, "stale")
	fresh := env.register(t, "fresh")
	longPoll := env.register(t, "polling")
	sb := env.insert(t, stale, "", sandbox.Running)
	fnc := env.insert(t, stale, "fu-1", sandbox.Pending)
	kept := env.insert(t, fresh, "fu-1", sandbox.Running)

	ctx, cancel := context.WithCancel(context.Background())
	var pollErr error
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		_, pollErr = env.f.Assignments(ctx, longPoll, time.Minute)
	}()
	t.Cleanup(func() {
		cancel()
		<-polled
	})
	waitFor(t, "the long poll", func() bool { return env.f.polling(longPoll) })

	now := time.Now()
	env.f.mu.Lock()
	env.f.workers[stale].lastPoll = now.Add(-workerTimeout - time.Second)
	env.f.workers[fresh].lastPoll = now.Add(-workerTimeout + time.Second)
	env.f.workers[longPoll].lastPoll = now.Add(-10 * workerTimeout) // its last poll ended long ago; this one has not
	env.f.mu.Unlock()
	env.f.expireWorkers(now)

	if err := env.f.CheckWorker(stale); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the stale worker is still registered: %v", err)
	}
	for _, id := range []string{fresh, longPoll} {
		if err := env.f.CheckWorker(id); err != nil {
			t.Fatalf("worker %s was expired: %v", id, err)
		}
	}
	for _, c := range []sandbox.Sandbox{sb, fnc} {
		got := env.get(t, c.ID)
		if got.Status != sandbox.Failed || got.ExitCode == nil || *got.ExitCode != sandbox.ExitTerminated || got.Error == nil {
			t.Errorf("container %s of the lost worker: %s, exit %v, error %v; want failed with 137 and a reason", c.ID, got.Status, got.ExitCode, got.Error)
		}
	}
	if got := env.get(t, kept.ID); got.Status != sandbox.Running {
		t.Errorf("the fresh worker's container became %s", got.Status)
	}
	if got := env.endedIDs(); !slices.Equal(got, []string{fnc.ID}) {
		t.Errorf("OnContainerEnd heard of %v, want only %s", got, fnc.ID)
	}
	// No final interval will come from a worker that is gone: the ledger hears of them.
	if got, want := env.lostIDs(), slices.Sorted(slices.Values([]string{sb.ID, fnc.ID})); !slices.Equal(got, want) {
		t.Errorf("OnLost heard of %v, want %v", got, want)
	}

	// Its poll ended now: it is fresh again for another workerTimeout.
	cancel()
	<-polled
	if !errors.Is(pollErr, context.Canceled) {
		t.Fatalf("a cancelled long poll returned %v", pollErr)
	}
	env.f.expireWorkers(time.Now().Add(workerTimeout / 2))
	if err := env.f.CheckWorker(longPoll); err != nil {
		t.Fatalf("a worker whose poll just ended was expired: %v", err)
	}
	env.f.expireWorkers(time.Now().Add(workerTimeout + time.Second))
	if err := env.f.CheckWorker(longPoll); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a worker silent for longer than workerTimeout is still registered: %v", err)
	}
}

func TestAssignments(t *testing.T) {
	t.Run("queued ones at once", func(t *testing.T) {
		env := newTestEnv(t)
		id := env.register(t, "a")
		env.f.SendInputs(id, "sb-1", []workerproto.Input{{ID: "in-1"}})
		env.f.SendInputs(id, "sb-1", []workerproto.Input{{ID: "in-2"}})
		start := time.Now()
		as, err := env.f.Assignments(context.Background(), id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("queued assignments took %v", time.Since(start))
		}
		if len(as) != 2 || as[0].Op != workerproto.OpInputs || as[0].ContainerID != "sb-1" || as[0].Inputs[0].ID != "in-1" || as[1].Inputs[0].ID != "in-2" {
			t.Fatalf("assignments %+v, want the two inputs in order", as)
		}
		// They were handed out once.
		as, err = env.f.Assignments(context.Background(), id, 0)
		if err != nil || len(as) != 0 {
			t.Fatalf("a second poll got %v, %v; want nothing", as, err)
		}
	})
	t.Run("wakes when something is assigned", func(t *testing.T) {
		env := newTestEnv(t)
		id := env.register(t, "a")
		type result struct {
			as  []workerproto.Assignment
			err error
		}
		got := make(chan result, 1)
		go func() {
			as, err := env.f.Assignments(context.Background(), id, 30*time.Second)
			got <- result{as, err}
		}()
		waitFor(t, "the long poll", func() bool { return env.f.polling(id) })
		env.f.SendInputs(id, "sb-1", []workerproto.Input{{ID: "in-1"}})
		select {
		case r := <-got:
			if r.err != nil || len(r.as) != 1 || r.as[0].Inputs[0].ID != "in-1" {
				t.Fatalf("the long poll got %+v, %v", r.as, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the long poll did not wake")
		}
	})
	t.Run("empty after the wait", func(t *testing.T) {
		env := newTestEnv(t)
		id := env.register(t, "a")
		start := time.Now()
		as, err := env.f.Assignments(context.Background(), id, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if as == nil || len(as) != 0 {
			t.Fatalf("got %#v, want an empty list (JSON [], not null)", as)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Fatalf("returned after %v, before the wait", d)
		}
		if env.f.polling(id) {
			t.Fatal("the poll is still counted after it returned")
		}
	})
	t.Run("unknown worker", func(t *testing.T) {
		env := newTestEnv(t)
		if _, err := env.f.Assignments(context.Background(), "wk-nobody", 0); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("got %v, want not found (the worker registers again)", err)
		}
		env.f.SendInputs("wk-nobody", "sb-1", []workerproto.Input{{ID: "in-1"}}) // dropped, no panic
	})
	t.Run("ends with its context", func(t *testing.T) {
		env := newTestEnv(t)
		id := env.register(t, "a")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := env.f.Assignments(ctx, id, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the context's error", err)
		}
	})
}

func TestWatch(t *testing.T) {
	env := newTestEnv(t)
	a, b := env.f.Watch("sb-1"), env.f.Watch("sb-1")
	other := env.f.Watch("sb-2")
	env.f.notify("sb-1")
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("a watcher of sb-1 was not woken")
		}
	}
	select {
	case <-other:
		t.Fatal("a watcher of sb-2 was woken by sb-1's change")
	default:
	}
	select {
	case <-env.f.Watch("sb-1"):
		t.Fatal("a new watch is closed already")
	default:
	}
}
