package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// buildApp holds the build containers, so they show apart from users' sandboxes.
const buildApp = "gust-image-builds"

// buildLocks makes two requests for the same image build it once: the second waits for the
// first and then finds every layer cached.
var buildLocks sync.Map // image hash → *sync.Mutex

// buildSteps applies build steps to base. Each step that runs commands is a layer, made in a
// build container from the image so far and cached by the hash of its definition and its
// parent's; env and workdir steps change only the image's defaults.
func (s *Server) buildSteps(ctx context.Context, base image.Image, steps []image.Step, force bool, logs io.Writer) (image.Image, error) {
	final := base.Hash
	for _, st := range steps {
		final = image.ChainHash(final, st)
	}
	mu, _ := buildLocks.LoadOrStore(final, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	cur := base
	announced := false
	start := time.Now()
	for i, st := range steps {
		hash := image.ChainHash(cur.Hash, st)
		if !force {
			if im, ok, _ := s.store.ImageByHash(ctx, hash); ok && layersExist(im.Layers) {
				cur = im
				continue
			}
		}
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
			layer, size, err := s.cfg.Images.ExtractLayer(st.Blob, st.Remote, hash)
			if err != nil {
				return cur, fmt.Errorf("step %d (%s): %w", i+1, st.Describe(), err)
			}
			next.Layers = append(next.Layers, layer)
			next.SizeBytes = cur.SizeBytes + size
		default:
			if !announced {
				fmt.Fprintf(logs, "Building image %s\n", "im-"+final[:24])
				announced = true
			}
			fmt.Fprintf(logs, "=> step %d: %s\n", i+1, st.Describe())
			layer, size, err := s.runStep(ctx, cur, st, i+1, logs)
			if err != nil {
				return cur, err
			}
			next.Layers = append(next.Layers, layer)
			next.SizeBytes = cur.SizeBytes + size
		}
		if err := s.store.PutImage(ctx, next); err != nil {
			return cur, err
		}
		cur = next
	}
	if announced {
		fmt.Fprintf(logs, "Built image %s in %.1f s\n", cur.ID, time.Since(start).Seconds())
	}
	return cur, nil
}

func layersExist(layers []string) bool {
	for _, l := range layers {
		if _, err := os.Stat(l); err != nil {
			return false
		}
	}
	return true
}

// runStep runs one step's commands in a build container over the image so far and returns the
// container's changes as a new layer. A failed command fails the build and leaves no layer.
func (s *Server) runStep(ctx context.Context, parent image.Image, st image.Step, n int, logs io.Writer) (string, int64, error) {
	app, err := s.store.LookupApp(ctx, buildApp, true)
	if err != nil {
		return "", 0, err
	}
	timeout, memory := float64(3600), 2048
	cpu, hostMem := s.capacity()
	req := sandbox.CreateRequest{AppID: app.ID, ImageID: parent.ID, Timeout: &timeout, Isolation: sandbox.IsolationRunc,
		Memory: &memory, CPU: &cpu, Tags: map[string]string{"image_build": parent.ID}}
	if memory > hostMem {
		req.Memory = nil
	}
	sb, err := req.Validate(sandbox.IsolationRunc, cpu, hostMem)
	if err != nil {
		return "", 0, err
	}
	sb.HostNetwork = true // package installs need the network, as in `docker build`
	sb, err = s.createSandbox(ctx, sb, nil, nil)
	if err != nil {
		return "", 0, fmt.Errorf("starting the build container for step %d: %w", n, err)
	}
	defer s.terminate(context.Background(), sb.ID, sandbox.Terminated, "")
	s.mu.Lock()
	wc := s.workers[sb.WorkerID]
	s.mu.Unlock()
	if wc == nil {
		return "", 0, errdefs.Unavailable("the build container's worker went away")
	}
	tail := &tailWriter{max: 4 << 10}
	out := io.MultiWriter(logs, tail)
	for _, cmd := range st.ShellCommands() {
		code, err := s.workerExec(ctx, wc, sb.ID, cmd, st.Env, out)
		if err != nil {
			return "", 0, fmt.Errorf("step %d (%s): %w", n, st.Describe(), err)
		}
		if code != 0 {
			return "", 0, errdefs.Invalid("image build failed at step %d, %s: the command %q exited with code %d. Last output:\n%s",
				n, st.Describe(), cmd, code, strings.TrimRight(tail.String(), "\n"))
		}
	}
	var snap workerproto.SnapshotResponse
	if err := s.workerJSON(ctx, wc, http.MethodPost, "/v1/sandboxes/"+sb.ID+"/snapshot", nil, &snap); err != nil {
		return "", 0, fmt.Errorf("step %d: saving the layer: %w", n, err)
	}
	return snap.Layer, snap.SizeBytes, nil
}

// workerExec runs `sh -c cmd` in a sandbox through its worker's API, copying the output to out.
func (s *Server) workerExec(ctx context.Context, wc *workerConn, id, cmd string, env map[string]string, out io.Writer) (int, error) {
	body, _ := json.Marshal(map[string]any{"command": []string{"sh", "-c", cmd}, "env": env})
	resp, err := s.workerDo(ctx, wc, http.MethodPost, "/v1/sandboxes/"+id+"/execs", body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line struct {
			Data     string `json:"data"`
			ExitCode *int   `json:"exit_code"`
			Error    string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line.ExitCode != nil {
			if line.Error != "" {
				fmt.Fprintln(out, line.Error)
			}
			return *line.ExitCode, nil
		}
		if b, err := base64.StdEncoding.DecodeString(line.Data); err == nil {
			out.Write(b)
		}
	}
	return 0, fmt.Errorf("the build command's output ended early: %v", sc.Err())
}

func (s *Server) workerDo(ctx context.Context, wc *workerConn, method, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, wc.reg.Addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := workerClient.Do(req)
	if err != nil {
		return nil, errdefs.Unavailable("worker unreachable: %v", err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, httpapi.DecodeError(resp)
	}
	return resp, nil
}

func (s *Server) workerJSON(ctx context.Context, wc *workerConn, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	resp, err := s.workerDo(ctx, wc, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

var workerClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}}

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
