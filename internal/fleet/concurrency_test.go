package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// TestConcurrentEnds: of several reports of a container's end at once (a worker's report, a
// terminate after its worker went, the worker's loss), exactly one moves it; the others are
// refused as conflicts. Its worker's capacity is given back once and the function engine
// hears of it once.
func TestConcurrentEnds(t *testing.T) {
	for i := 0; i < 5; i++ {
		env := newTestEnv(t)
		wid := env.register(t, "a")
		for range 3 { // three other containers that stay
			if _, _, err := env.f.place(env.newSandbox()); err != nil {
				t.Fatal(err)
			}
		}
		sb := env.insert(t, wid, "fu-1", sandbox.Running)
		if _, _, err := env.f.place(sb); err != nil { // counted like the others
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				code := sandbox.ExitTerminated
				errs[i] = env.f.ReportState(context.Background(), wid, sb.ID, workerproto.StateReport{Status: sandbox.Terminated, ExitCode: &code})
			})
		}
		wg.Wait()
		moved := 0
		for _, err := range errs {
			switch {
			case err == nil:
				moved++
			case !errors.Is(err, errdefs.ErrConflict):
				t.Fatalf("a concurrent end report failed with %v, want a conflict", err)
			}
		}
		if moved != 1 {
			t.Fatalf("%d of 8 concurrent end reports moved the container, want 1", moved)
		}
		if r, m := env.f.counts(wid); r != 3 || m != 3*512 {
			t.Fatalf("the worker counts %d containers and %d MiB, want the other 3 and their 1536", r, m)
		}
		if got := env.endedIDs(); len(got) != 1 {
			t.Fatalf("OnContainerEnd heard of the end %d times", len(got))
		}
	}
}

// TestSetTags: tags are replaced, and a tag change at the same time as a state report never
// writes back the status the report moved on from.
func TestSetTags(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	if _, err := env.f.SetTags(ctx, "sb-nothing", map[string]string{"k": "v"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("tags of an unknown sandbox: %v, want not found", err)
	}
	wid := env.register(t, "a")
	for i := 0; i < 5; i++ {
		sb := env.insert(t, wid, "", sandbox.Running)
		var wg sync.WaitGroup
		for j := range 6 {
			wg.Go(func() {
				if _, err := env.f.SetTags(ctx, sb.ID, map[string]string{"n": fmt.Sprint(j)}); err != nil {
					t.Errorf("set tags: %v", err)
				}
			})
		}
		wg.Go(func() {
			code := 0
			if err := env.f.ReportState(ctx, wid, sb.ID, workerproto.StateReport{Status: sandbox.Finished, ExitCode: &code}); err != nil {
				t.Errorf("report: %v", err)
			}
		})
		wg.Wait()
		got := env.get(t, sb.ID)
		if got.Status != sandbox.Finished || got.FinishedAt == nil {
			t.Fatalf("after a tag change beside its end the sandbox is %s (finished at %v), want finished", got.Status, got.FinishedAt)
		}
		if len(got.Tags) != 1 || got.Tags["n"] == "" {
			t.Fatalf("tags %v, want one of the writes", got.Tags)
		}
	}
	sb := env.insert(t, wid, "", sandbox.Running)
	want := map[string]string{"team": "ml", "tier": "gpu"}
	got, err := env.f.SetTags(ctx, sb.ID, want)
	if err != nil || !maps.Equal(got.Tags, want) || got.Status != sandbox.Running {
		t.Fatalf("SetTags returned %v %s, %v", got.Tags, got.Status, err)
	}
	if stored := env.get(t, sb.ID); !maps.Equal(stored.Tags, want) {
		t.Fatalf("the store has tags %v", stored.Tags)
	}
}
