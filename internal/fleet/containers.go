package fleet

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// startTimeout bounds how long a create waits for the worker to start the container.
const startTimeout = 90 * time.Second

// terminateTimeout bounds how long a terminate waits for the worker to confirm.
const terminateTimeout = 30 * time.Second

// Create places a validated sandbox (or function container, with fn set and its ID preset) on
// a worker and waits until it runs. The image's environment and workdir are its defaults. If
// ctx ends first (the client went away), it is terminated: nobody would know about it. placed,
// if set, learns which worker took it before it starts.
func (f *Fleet) Create(ctx context.Context, sb sandbox.Sandbox, fn *workerproto.FunctionRun, placed func(workerID string)) (sandbox.Sandbox, error) {
	app, err := f.store.GetApp(ctx, sb.AppID)
	if err != nil {
		return sb, err
	}
	if sb.WorkspaceID == "" {
		sb.WorkspaceID = app.WorkspaceID
	}
	if app.WorkspaceID != sb.WorkspaceID && sb.WorkspaceID != auth.SystemWorkspace {
		return sb, errdefs.NotFound("app %q not found", sb.AppID)
	}
	if err := f.admit(ctx, sb); err != nil {
		return sb, err
	}
	if err := sandbox.CheckVolumeMounts(sb.Volumes, sb.Isolation); err != nil {
		return sb, err
	}
	for _, v := range sb.Volumes {
		// Another workspace's volume is not found, as everything of it is.
		if _, err := f.store.GetVolume(ctx, sb.WorkspaceID, v.VolumeID); err != nil {
			return sb, err
		}
	}
	im, err := f.store.GetImage(ctx, sb.ImageID)
	if err != nil {
		return sb, fmt.Errorf("%w (resolve an image first, e.g. Image.debian_slim())", err)
	}
	own := sb.Env
	withImageDefaults(&sb, im)
	if sb.ID == "" {
		sb.ID = ids.New(ids.Sandbox)
	}
	// A container whose GPUs are all held waits for one to be given back: a sandbox up to
	// its timeout, a function container up to its input timeout (GPUWait).
	wait := sb.GPUWait.D()
	if wait <= 0 {
		wait = sb.Timeout.D()
	}
	wc, gpus, err := f.placeWaiting(ctx, sb, wait)
	if err != nil {
		return sb, err
	}
	sb.WorkerID = wc.id
	if placed != nil {
		placed(wc.id)
	}
	sb.CreatedAt = time.Now().UTC()
	if err := f.insertWithinQuota(ctx, sb); err != nil {
		f.unplace(wc, sb)
		return sb, err
	}
	changed := f.Watch(sb.ID)
	spec := containerSpec(sb, im.Layers, fn)
	spec.GPUs = gpus
	if len(gpus) > 0 {
		spec.GPUType, spec.GPUCount = gpus[0].TypeOf(), len(gpus)
	}
	spec.Env = withSecretEnv(spec.Env, sb.SecretEnv, own)
	sb.SecretEnv = nil
	if fn != nil {
		// The function's own credential: it may call functions and manage the sandboxes it
		// makes, in its workspace, until it ends. It is never stored but as a hash.
		id, secret := auth.NewCredential()
		if err := f.store.PutToken(ctx, auth.Token{ID: id, WorkspaceID: sb.WorkspaceID, Name: "container " + sb.ID, Role: auth.Member,
			Kind: auth.Container, ContainerID: sb.ID, Hash: auth.Hash(secret), CreatedAt: sb.CreatedAt}); err != nil {
			f.log.Printf("function container %s: making its credential: %v", sb.ID, err)
		} else {
			spec.Env = maps.Clone(spec.Env)
			if spec.Env == nil {
				spec.Env = map[string]string{}
			}
			spec.Env["GUST_TOKEN_ID"], spec.Env["GUST_TOKEN_SECRET"] = id, secret
		}
	}
	f.assign(wc, workerproto.Assignment{Op: workerproto.OpCreate, Container: &spec})
	return f.waitStarted(ctx, sb, changed)
}

// withImageDefaults gives a sandbox its image's environment (under its own), user and workdir.
func withImageDefaults(sb *sandbox.Sandbox, im image.Image) {
	if len(im.Env) > 0 {
		env := maps.Clone(im.Env)
		maps.Copy(env, sb.Env)
		sb.Env = env
	}
	sb.User = im.User
	if sb.Workdir == nil && im.Workdir != "" {
		wd := im.Workdir
		sb.Workdir = &wd
	}
}

// withSecretEnv is a container's environment: its image's, under its secrets', under its own.
// env holds the first and the last (the stored record's Env), own the last alone. Secret
// values are in the spec only: the record never holds them.
func withSecretEnv(env, secretEnv, own map[string]string) map[string]string {
	if len(secretEnv) == 0 {
		return env
	}
	out := maps.Clone(env)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range secretEnv {
		if _, mine := own[k]; !mine {
			out[k] = v
		}
	}
	return out
}

// containerSpec is what the worker is sent: the container, not the client's record.
func containerSpec(sb sandbox.Sandbox, layers []string, fn *workerproto.FunctionRun) workerproto.ContainerSpec {
	spec := workerproto.ContainerSpec{
		ID: sb.ID, Isolation: sb.Isolation, ImageLayers: layers, Command: sb.Command, Env: sb.Env, User: sb.User,
		CPU: sb.CPU, CPULimit: sb.CPU, MemoryMiB: sb.MemoryMiB, BuildEgress: sb.BuildEgress, Timeout: sb.Timeout, Function: fn,
		Network:        sb.NetworkPolicy,
		ReadinessProbe: sb.ReadinessProbe,
		Volumes:        sb.Volumes,
	}
	for _, p := range sb.Ports {
		spec.Ports = append(spec.Ports, p.Port)
	}
	if sb.FunctionID != "" {
		// A function's cpu is a request it may burst above, unless it set a limit.
		spec.CPULimit = sb.CPULimit
	}
	if sb.Workdir != nil {
		spec.Workdir = *sb.Workdir
	}
	if sb.IdleTimeout != nil {
		spec.IdleTimeout = *sb.IdleTimeout
	}
	return spec
}

// waitStarted waits for a created container to leave pending.
func (f *Fleet) waitStarted(ctx context.Context, sb sandbox.Sandbox, changed <-chan struct{}) (sandbox.Sandbox, error) {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-changed:
		case <-deadline.C:
			f.terminateQuietly(sb.ID, sandbox.Failed, "the worker did not start the sandbox in time")
			return sb, errdefs.Unavailable("sandbox %s did not start within %v", sb.ID, startTimeout)
		case <-ctx.Done():
			f.terminateQuietly(sb.ID, sandbox.Terminated, "the client disconnected while the sandbox was starting")
			return sb, ctx.Err()
		}
		changed = f.Watch(sb.ID)
		cur, err := f.store.GetSandbox(ctx, sb.ID)
		if err != nil {
			return sb, err
		}
		switch cur.Status {
		case sandbox.Pending:
			continue
		case sandbox.Failed:
			msg := "unknown error"
			if cur.Error != nil {
				msg = *cur.Error
			}
			err := errdefs.Unavailable("sandbox %s failed to start: %s", sb.ID, msg)
			if f.CheckWorker(cur.WorkerID) != nil {
				err = lostError{err}
			}
			return cur, err
		}
		return cur, nil
	}
}

// lostError is a start that failed because the container's worker went away: it is of its
// kind (unavailable) and also sandbox.ErrWorkerLost.
type lostError struct{ error }

func (e lostError) Unwrap() []error { return []error{e.error, sandbox.ErrWorkerLost} }

// terminateQuietly terminates a container whose caller has an error to return already; a failure is logged.
func (f *Fleet) terminateQuietly(id string, status sandbox.Status, reason string) {
	if _, err := f.Terminate(context.Background(), id, status, reason); err != nil {
		f.log.Printf("terminating sandbox %s (%s): %v", id, reason, err)
	}
}

// Terminate asks a container's worker to stop it and waits until the worker reports it gone.
// status is the end it is recorded with (terminated, timeout, or failed).
func (f *Fleet) Terminate(ctx context.Context, id string, status sandbox.Status, reason string) (sandbox.Sandbox, error) {
	sb, err := f.store.GetSandbox(ctx, id)
	if err != nil || sb.Status.Terminal() {
		return sb, err
	}
	f.mu.Lock()
	wc := f.workers[sb.WorkerID]
	f.mu.Unlock()
	if wc == nil {
		// Its worker is gone, and the container with it.
		code := sandbox.ExitTerminated
		return f.setState(ctx, "", id, workerproto.StateReport{Status: status, ExitCode: &code, Error: strPtr(reason)})
	}
	changed := f.Watch(id)
	a := workerproto.Assignment{Op: workerproto.OpTerminate, ContainerID: id, EndStatus: status}
	if status == sandbox.Failed {
		a.Reason = reason // a failure says why; a stop asked for is not an error
	}
	f.assign(wc, a)
	timeout := time.NewTimer(terminateTimeout)
	defer timeout.Stop()
	for {
		select {
		case <-changed:
		case <-timeout.C:
			return sb, errdefs.Unavailable("worker did not confirm that sandbox %s stopped", id)
		case <-ctx.Done():
			return sb, ctx.Err()
		}
		changed = f.Watch(id)
		sb, err = f.store.GetSandbox(ctx, id)
		if err != nil || sb.Status.Terminal() {
			return sb, err
		}
	}
}

// ReportState applies a worker's report of one of its containers. A worker speaks only for
// its own: another's container is not found, as far as it can tell.
func (f *Fleet) ReportState(ctx context.Context, workerID, id string, st workerproto.StateReport) error {
	if err := f.CheckWorker(workerID); err != nil {
		return err
	}
	_, err := f.setState(ctx, workerID, id, st)
	return err
}

// setState moves a container through the sandbox lifecycle, records it, wakes its waiters,
// gives back its worker's capacity when it ends, and tells the function engine. reporter is
// the worker that reports it, which must be the container's own; "" is the fleet itself.
func (f *Fleet) setState(ctx context.Context, reporter, id string, st workerproto.StateReport) (sandbox.Sandbox, error) {
	sb, err := f.recordState(ctx, reporter, id, st)
	if err != nil {
		return sb, err
	}
	if st.Status.Terminal() {
		f.release(sb)
		f.onAnyEnd(sb)
	}
	f.notify(id)
	if sb.FunctionID != "" && st.Status.Terminal() {
		if err := f.store.DeleteContainerTokens(ctx, sb.ID); err != nil {
			f.log.Printf("function container %s: revoking its credential: %v", sb.ID, err)
		}
		f.onEnd(sb)
	}
	return sb, nil
}

// recordState moves a container's record through the lifecycle and writes it, under records:
// of two reports of an end at once, one moves it and the other is refused.
func (f *Fleet) recordState(ctx context.Context, reporter, id string, st workerproto.StateReport) (sandbox.Sandbox, error) {
	f.records.Lock()
	defer f.records.Unlock()
	sb, err := f.store.GetSandbox(ctx, id)
	if err != nil {
		return sb, err
	}
	if reporter != "" && sb.WorkerID != reporter {
		return sb, errdefs.NotFound("sandbox %s is not running on worker %s", id, reporter)
	}
	now := time.Now().UTC()
	if st.Status.Terminal() {
		err = endRecord(&sb, st, now)
	} else {
		err = sandbox.Lifecycle.Move(&sb.Status, st.Status)
		if st.Status == sandbox.Running {
			sb.StartedAt = &now
		}
	}
	if err != nil {
		return sb, fmt.Errorf("sandbox %s: %w", id, err)
	}
	return sb, f.store.UpdateSandbox(ctx, sb)
}

// SetTags replaces a sandbox's tags. It goes through the fleet, not the store, so that it
// cannot write back a status that a report changed meanwhile.
func (f *Fleet) SetTags(ctx context.Context, id string, tags map[string]string) (sandbox.Sandbox, error) {
	f.records.Lock()
	defer f.records.Unlock()
	sb, err := f.store.GetSandbox(ctx, id)
	if err != nil {
		return sb, err
	}
	sb.Tags = tags
	return sb, f.store.UpdateSandbox(ctx, sb)
}

// SetNetwork replaces a running sandbox's network policy: on its worker first (one atomic
// change there), then in its record. The worker's call runs outside records, which every state
// report takes; the record is read again after it, so that a report meanwhile is kept.
func (f *Fleet) SetNetwork(ctx context.Context, id string, p sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	sb, err := f.store.GetSandbox(ctx, id)
	if err != nil {
		return sb, err
	}
	if sb.Status != sandbox.Running {
		return sb, errdefs.Conflict("sandbox %s is %s: only a running sandbox's network policy can be replaced", id, sb.Status)
	}
	client, err := f.Client(sb)
	if err != nil {
		return sb, err
	}
	if err := client.SetNetwork(ctx, id, p); err != nil {
		return sb, err
	}
	f.records.Lock()
	defer f.records.Unlock()
	if sb, err = f.store.GetSandbox(ctx, id); err != nil {
		return sb, err
	}
	sb.NetworkPolicy = p
	return sb, f.store.UpdateSandbox(ctx, sb)
}

// endRecord moves a record to its end through the lifecycle.
func endRecord(sb *sandbox.Sandbox, st workerproto.StateReport, now time.Time) error {
	if err := sandbox.Lifecycle.Move(&sb.Status, st.Status); err != nil {
		return err
	}
	sb.FinishedAt = &now
	sb.ExitCode, sb.Error = st.ExitCode, st.Error
	if st.GPU != nil {
		sb.GPUUsage = st.GPU
	}
	return nil
}

// insertWithinQuota records a new container unless it would take its workspace over a quota.
func (f *Fleet) insertWithinQuota(ctx context.Context, sb sandbox.Sandbox) error {
	if sb.WorkspaceID == auth.SystemWorkspace {
		return f.store.InsertSandbox(ctx, sb)
	}
	f.quotas.Lock()
	defer f.quotas.Unlock()
	ws, err := f.store.GetWorkspace(ctx, sb.WorkspaceID)
	if err != nil {
		return err
	}
	if q := ws.Quotas; q != (store.Quotas{}) {
		use, err := f.store.WorkspaceUsage(ctx, sb.WorkspaceID)
		if err != nil {
			return err
		}
		if err := overQuota(q, use, sb); err != nil {
			return err
		}
	}
	return f.store.InsertSandbox(ctx, sb)
}

// overQuota names the first quota that sb would go over, given what its workspace holds.
func overQuota(q store.Quotas, use store.Usage, sb sandbox.Sandbox) error {
	over := func(name string, limit, now, more float64) error {
		return errdefs.WithKind(errdefs.ErrQuota, fmt.Sprintf("quota %s is %v for this workspace and %v is in use; this container asks for %v more (terminate sandboxes or ask the operator for more)",
			name, limit, now, more))
	}
	switch {
	case q.Sandboxes > 0 && use.Sandboxes+1 > q.Sandboxes:
		return over("sandboxes", float64(q.Sandboxes), float64(use.Sandboxes), 1)
	case q.CPU > 0 && use.CPU+sb.CPU > q.CPU+1e-9:
		return over("cpu", q.CPU, use.CPU, sb.CPU)
	case q.MemoryMiB > 0 && use.MemoryMiB+sb.MemoryMiB > q.MemoryMiB:
		return over("memory_mib", float64(q.MemoryMiB), float64(use.MemoryMiB), float64(sb.MemoryMiB))
	case q.GPUs > 0 && use.GPUs+sb.GPU.MaxCount() > q.GPUs:
		return over("gpus", float64(q.GPUs), float64(use.GPUs), float64(sb.GPU.MaxCount()))
	}
	return nil
}
