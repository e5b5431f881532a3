package worker

import "github.com/gust-run/gust/internal/lifecycle"

// The worker's two lifecycles: a container's on this worker (box) and a function container's
// runner. Every change of either goes through its machine's Move; why a container ended (its
// end status and reason) is data beside the state, not a state.

// boxState is where a container is in its life on this worker.
type boxState string

const (
	// boxStarting: the container is being made, its workdir created and its main process or
	// runner started. Nothing is reported yet.
	boxStarting boxState = "starting"
	// boxRunning: started and reported running; execs, files and inputs are served, and its
	// timeouts are enforced.
	boxRunning boxState = "running"
	// boxStopping: a terminate is stopping its runner and removing it.
	boxStopping boxState = "stopping"
	// boxExited: the container is gone and its end was reported, once. Its processes' output
	// stays readable for keepFinished.
	boxExited boxState = "exited"
)

// boxLifecycle:
//
//	starting ──▶ running ──▶ stopping ──▶ exited
//	starting ──▶ stopping   terminated once the container exists
//	starting ──▶ exited     failed to start, its init died, or terminated before it existed
//	running  ──▶ exited     ended by itself: its main process exited, or its init died
var boxLifecycle = lifecycle.New("worker container", map[boxState][]boxState{
	boxStarting: {boxRunning, boxStopping, boxExited},
	boxRunning:  {boxStopping, boxExited},
	boxStopping: {boxExited},
})

// runnerState is where a function container's runner is in its life.
type runnerState string

const (
	// runnerStarting: the runner process runs and imports the function's module. Inputs are
	// written to it already; it reads them once it is ready.
	runnerStarting runnerState = "starting"
	// runnerReady: the runner said ready.
	runnerReady runnerState = "ready"
	// runnerDraining: nothing more starts in it. Either an input ran past its timeout (the
	// container is being killed) or the container is stopping (the runner runs its @exit
	// hooks).
	runnerDraining runnerState = "draining"
	// runnerExited: its container ended, and every input it had is settled: an output, crashed,
	// or not started.
	runnerExited runnerState = "exited"
)

// runnerLifecycle:
//
//	starting ──▶ ready ──▶ draining ──▶ exited
//	starting ──▶ draining   an input timed out, or the container is stopping, before ready
//	starting ──▶ exited     the container ended by itself
//	ready    ──▶ exited     the container ended by itself
var runnerLifecycle = lifecycle.New("function runner", map[runnerState][]runnerState{
	runnerStarting: {runnerReady, runnerDraining, runnerExited},
	runnerReady:    {runnerDraining, runnerExited},
	runnerDraining: {runnerExited},
})
