package imagebuild

import (
	"context"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/metering"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// buildApp holds the build containers, so they show apart from users' sandboxes.
const buildApp = "gust-image-builds"

// buildLocks makes two requests for the same image build it once: the second waits for the
// first and then finds every layer cached.
var buildLocks sync.Map // image hash → *sync.Mutex

// buildSteps applies build steps to base for workspace ws. Each step that runs commands is a
// layer, made in a build container from the image so far and cached by the hash of its
// definition, its parent's and ws (image.StepHash: another workspace's build of the same
// steps is not a cache hit); env and workdir steps change only the image's defaults.
func (b *Builder) buildSteps(ctx context.Context, ws string, base image.Image, steps []image.Step, force bool, logs io.Writer) (image.Image, error) {
	final := base.Hash
	for _, st := range steps {
		final = image.StepHash(ws, final, st)
	}
	mu, _ := buildLocks.LoadOrStore(final, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	cur := base
	announced := false
	start := time.Now()
	for i, st := range steps {
		hash := image.StepHash(ws, cur.Hash, st)
		if !force {
			im, ok, err := b.store.ImageByHash(ctx, hash)
			if err != nil {
				return cur, fmt.Errorf("step %d: looking up its cached layer: %w", i+1, err)
			}
			if ok && layersExist(im.Layers) {
				cur = im
				continue
			}
		}
		if runsCommands(st) && !announced {
			logf(logs, "Building image %s\n", "im-"+final[:24])
			announced = true
		}
		next, err := b.applyStep(ctx, cur, st, i+1, hash, logs)
		if err != nil {
			return cur, err
		}
		if err := b.store.PutImage(ctx, next); err != nil {
			return cur, err
		}
		cur = next
	}
	if announced {
		logf(logs, "Built image %s in %.1f s\n", cur.ID, time.Since(start).Seconds())
	}
	return cur, nil
}

// applyStep makes the image of one step over cur.
func (b *Builder) applyStep(ctx context.Context, cur image.Image, st image.Step, n int, hash string, logs io.Writer) (image.Image, error) {
	next := cur
	parentID := cur.ID
	next.ID, next.Hash, next.Kind, next.ParentID = "im-"+hash[:24], hash, image.KindBuilt, &parentID
	next.Env, next.Layers = maps.Clone(cur.Env), append([]string(nil), cur.Layers...)
	next.CreatedAt = time.Now().UTC()
	switch st.Type {
	case "env":
		if next.Env == nil {
			next.Env = map[string]string{}
		}
		maps.Copy(next.Env, st.Env)
	case "workdir":
		next.Workdir = st.Path
	case "entrypoint":
		next.Entrypoint = st.Commands
	case "user":
		next.User = st.User
	case "add_local":
		layer, size, err := b.layers.ExtractLayer(st.Blob, st.Remote, hash)
		if err != nil {
			return cur, fmt.Errorf("step %d (%s): %w", n, st.Describe(), err)
		}
		next.Layers = append(next.Layers, layer)
		next.SizeBytes = cur.SizeBytes + size
	default:
		logf(logs, "=> step %d: %s\n", n, st.Describe())
		layer, size, err := b.runStep(ctx, cur, st, n, logs)
		if err != nil {
			return cur, err
		}
		next.Layers = append(next.Layers, layer)
		next.SizeBytes = cur.SizeBytes + size
	}
	return next, nil
}

// runStep runs one step's commands in a build container over the image so far and returns the
// container's changes as a new layer. A failed command fails the build and leaves no layer.
func (b *Builder) runStep(ctx context.Context, parent image.Image, st image.Step, n int, logs io.Writer) (string, int64, error) {
	sb, err := b.buildContainer(ctx, parent, n)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		// The layer (if any) is saved already: a container that will not stop is the
		// fleet's to clean up, not a failed build.
		if _, err := b.fleet.Terminate(context.Background(), sb.ID, sandbox.Terminated, ""); err != nil {
			b.log.Printf("image build step %d: stopping build container %s: %v", n, sb.ID, err)
		}
	}()
	client, err := b.fleet.Client(sb)
	if err != nil {
		return "", 0, errdefs.Unavailable("the build container's worker went away: %v", err)
	}
	tail := &tailWriter{max: 4 << 10}
	out := io.MultiWriter(logs, tail)
	for _, cmd := range st.ShellCommands() {
		exit, err := client.Exec(ctx, sb.ID, workerproto.ExecRequest{Command: []string{"sh", "-c", cmd}, Env: st.Env}, out)
		if err != nil {
			return "", 0, fmt.Errorf("step %d (%s): %w", n, st.Describe(), err)
		}
		if exit.Error != "" {
			logf(out, "%s\n", exit.Error)
		}
		if exit.ExitCode != 0 {
			return "", 0, errdefs.Invalid("image build failed at step %d, %s: the command %q exited with code %d. Last output:\n%s",
				n, st.Describe(), cmd, exit.ExitCode, strings.TrimRight(tail.String(), "\n"))
		}
	}
	snap, err := b.snapshot(ctx, client, sb.ID)
	if err != nil {
		return "", 0, fmt.Errorf("step %d: saving the layer: %w", n, err)
	}
	return snap.Layer, snap.SizeBytes, nil
}

// snapshot saves a running container's changes as a layer on its worker. The worker says
// where; only a snapshot directory in the layer directory may become a layer that other
// sandboxes mount.
func (b *Builder) snapshot(ctx context.Context, client *workerproto.WorkerClient, id string) (workerproto.SnapshotResponse, error) {
	snap, err := client.Snapshot(ctx, id)
	if err != nil {
		return snap, err
	}
	return snap, b.layers.CheckSnapshotLayer(snap.Layer)
}

// SnapshotImage makes a new image of a running sandbox: its image's layers and its changes.
// It also returns the bytes the new layer adds, which the sandbox's workspace is charged.
func (b *Builder) SnapshotImage(ctx context.Context, sb sandbox.Sandbox) (image.Image, int64, error) {
	parent, err := b.store.GetImage(ctx, sb.ImageID)
	if err != nil {
		return image.Image{}, 0, err
	}
	client, err := b.fleet.Client(sb)
	if err != nil {
		return image.Image{}, 0, err
	}
	snap, err := b.snapshot(ctx, client, sb.ID)
	if err != nil {
		return image.Image{}, 0, err
	}
	pid := parent.ID
	im := image.Image{
		ID: ids.New(ids.Image), Kind: image.KindSnapshot, ParentID: &pid, Hash: "snapshot:" + snap.Layer,
		Layers: append(append([]string(nil), parent.Layers...), snap.Layer), SizeBytes: parent.SizeBytes + snap.SizeBytes,
		CreatedAt: time.Now().UTC(), Env: parent.Env, Workdir: parent.Workdir, User: parent.User,
	}
	return im, snap.SizeBytes, b.store.PutImage(ctx, im)
}

// buildContainer starts the container a step runs in: the parent image, 2 GiB where the
// machine has it, and its worker's egress proxy as its only network (package installs need
// their mirrors; nothing else on the machine or beyond it is reachable).
func (b *Builder) buildContainer(ctx context.Context, parent image.Image, n int) (sandbox.Sandbox, error) {
	app, err := b.store.LookupApp(ctx, auth.SystemWorkspace, buildApp, true)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	timeout, memory := float64(3600), 2048
	cpu, hostMem := b.fleet.Capacity()
	req := sandbox.CreateRequest{AppID: app.ID, ImageID: parent.ID, Timeout: &timeout, Isolation: sandbox.IsolationRunc,
		Memory: &memory, CPU: &cpu, Tags: map[string]string{"image_build": parent.ID}}
	if ws := billedTo(ctx); ws != "" {
		req.Tags[metering.BilledToTag] = ws // the usage ledger bills the build to the workspace that asked
	}
	if memory > hostMem {
		req.Memory = nil
	}
	sb, err := req.Validate(sandbox.IsolationRunc, cpu, hostMem)
	if err != nil {
		return sb, err
	}
	sb.BuildEgress = true
	sb.WorkspaceID = auth.SystemWorkspace
	sb, err = b.fleet.Create(ctx, sb, nil, nil)
	if err != nil {
		return sb, fmt.Errorf("starting the build container for step %d: %w", n, err)
	}
	return sb, nil
}

// tailWriter keeps the last max bytes written: the end of a failed step's log.
type tailWriter struct {
	max int
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.b) }

// runsCommands reports whether a step runs in a build container (the others only change the
// image's defaults or add files).
func runsCommands(st image.Step) bool {
	switch st.Type {
	case "env", "workdir", "entrypoint", "user", "add_local":
		return false
	}
	return true
}
