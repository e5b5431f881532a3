package worker

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/lifecycle"
)

// walkMachine tries every move between the states, and checks that exactly the allowed ones
// succeed and that a refused one is a conflict that leaves the state alone.
func walkMachine[S ~string](t *testing.T, m *lifecycle.Machine[S], states []S, allowed map[[2]S]bool) {
	t.Helper()
	if got := m.States(); !slices.Equal(got, sortedCopy(states)) {
		t.Fatalf("the machine names states %v, the test knows %v", got, states)
	}
	for _, from := range states {
		for _, to := range states {
			t.Run(fmt.Sprintf("%s→%s", from, to), func(t *testing.T) {
				cur := from
				err := m.Move(&cur, to)
				switch want := allowed[[2]S{from, to}]; {
				case want && err != nil:
					t.Errorf("refused an allowed move: %v", err)
				case want && cur != to:
					t.Errorf("state is %s after the move, want %s", cur, to)
				case !want && err == nil:
					t.Errorf("allowed a move that must be refused")
				case !want && (cur != from || !errors.Is(err, errdefs.ErrConflict)):
					t.Errorf("a refused move left state %s (want %s) with error %v (want a conflict)", cur, from, err)
				}
			})
		}
	}
}

func sortedCopy[S ~string](s []S) []S {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestBoxLifecycle(t *testing.T) {
	states := []boxState{boxStarting, boxRunning, boxStopping, boxExited}
	allowed := map[[2]boxState]bool{
		{boxStarting, boxRunning}:  true,
		{boxStarting, boxStopping}: true,
		{boxStarting, boxExited}:   true,
		{boxRunning, boxStopping}:  true,
		{boxRunning, boxExited}:    true,
		{boxStopping, boxExited}:   true,
	}
	walkMachine(t, boxLifecycle, states, allowed)
	if !boxLifecycle.Terminal(boxExited) {
		t.Error("exited must be terminal")
	}
}

func TestRunnerLifecycle(t *testing.T) {
	states := []runnerState{runnerStarting, runnerReady, runnerDraining, runnerExited}
	allowed := map[[2]runnerState]bool{
		{runnerStarting, runnerReady}:    true,
		{runnerStarting, runnerDraining}: true,
		{runnerStarting, runnerExited}:   true,
		{runnerReady, runnerDraining}:    true,
		{runnerReady, runnerExited}:      true,
		{runnerDraining, runnerExited}:   true,
	}
	walkMachine(t, runnerLifecycle, states, allowed)
	if !runnerLifecycle.Terminal(runnerExited) {
		t.Error("exited must be terminal")
	}
}
