package gust

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Status is where a sandbox is in its life.
type Status string

// Sandbox statuses. Pending and Running are live; the others are final.
const (
	StatusPending    Status = "pending"
	StatusRunning    Status = "running"
	StatusFinished   Status = "finished"   // its command exited
	StatusTerminated Status = "terminated" // Terminate was called
	StatusTimeout    Status = "timeout"    // its timeout or idle timeout passed
	StatusFailed     Status = "failed"     // it could not start, or its worker went away
)

// Done reports whether the status is final.
func (s Status) Done() bool {
	switch s {
	case StatusFinished, StatusTerminated, StatusTimeout, StatusFailed:
		return true
	}
	return false
}

// Isolation runtimes.
const (
	IsolationRunc   = "runc"
	IsolationGVisor = "gvisor"
)

// Exit codes the server gives sandboxes that did not end on their own.
const (
	ExitTimeout    = 124 // sandbox, idle or exec timeout
	ExitTerminated = 137 // terminated
)

// SandboxOptions configures CreateSandbox. Zero values leave a field to the server's default.
type SandboxOptions struct {
	App     string   // app ID (LookupApp), required
	Image   string   // image ID (DebianSlim, or a snapshot), required
	Command []string // the sandbox's main command; none keeps it up until terminated or timed out

	Timeout     time.Duration // lifetime limit (server default 300 s)
	IdleTimeout time.Duration // end after this long without exec or stdin activity; 0 for none
	CPU         float64       // cores
	MemoryMiB   int
	Workdir     string            // working directory of the command and execs
	Env         map[string]string // environment of the command and execs
	// BlockNetwork cuts the sandbox off the network.
	BlockNetwork bool
	// OutboundCIDRAllowlist and OutboundDomainAllowlist restrict its outbound network to those
	// IPv4 ranges and names (TCP 80 and 443 through the worker's proxy); nil for no list.
	OutboundCIDRAllowlist   []string
	OutboundDomainAllowlist []string
	// Name, unique among the app's running sandboxes, finds it again with SandboxFromName.
	Name string
	Tags map[string]string
	// Isolation is IsolationRunc or IsolationGVisor; "" for the server's default.
	Isolation string
	// Ports exposed through the server's ingress (Sandbox.Tunnels): over TLS by host name;
	// UnencryptedPorts also as raw TCP; H2Ports advertise HTTP/2. InboundCIDRAllowlist limits
	// the clients that may connect (empty: anyone who reaches the ingress).
	EncryptedPorts, UnencryptedPorts, H2Ports []int
	InboundCIDRAllowlist                      []string
	// ReadinessProbe says when the sandbox is ready (WaitUntilReady): NewTCPProbe, NewExecProbe.
	ReadinessProbe *Probe
	// GPU is what the sandbox needs, in order of preference: "H100", "A100-80GB:2", "any";
	// nil for none. The create waits while such GPUs exist but others hold them.
	GPU []string
}

// Sandbox is a container to run commands in. Its exported fields are its state as last fetched
// from the server; Refresh, Wait, Poll, Terminate and SetTags update them, so a Sandbox should
// not be read by one goroutine while another calls those. Its other methods may run
// concurrently.
type Sandbox struct {
	ID           string
	AppID        string
	Name         string // "" if unnamed
	Tags         map[string]string
	ImageID      string
	Command      []string
	Isolation    string
	Status       Status
	ExitCode     *int   // set once finished
	Error        string // why it ended, for unusual ends (e.g. killed by the OOM killer)
	Timeout      time.Duration
	IdleTimeout  time.Duration // 0 for none
	CPU          float64
	MemoryMiB    int
	Workdir      string // "" for the image's default
	BlockNetwork bool
	// OutboundCIDRAllowlist and OutboundDomainAllowlist are its allowlists in force (nil: none).
	OutboundCIDRAllowlist   []string
	OutboundDomainAllowlist []string
	CreatedAt               time.Time
	StartedAt               time.Time // zero until it started
	FinishedAt              time.Time // zero until it ended

	c *Client
}

// sandboxWire is SANDBOX as the API writes it.
type sandboxWire struct {
	ID           string            `json:"sandbox_id"`
	AppID        string            `json:"app_id"`
	Name         *string           `json:"name"`
	Tags         map[string]string `json:"tags"`
	ImageID      string            `json:"image_id"`
	Command      []string          `json:"command"`
	Isolation    string            `json:"isolation"`
	Status       Status            `json:"status"`
	ExitCode     *int              `json:"exit_code"`
	Error        *string           `json:"error"`
	Timeout      float64           `json:"timeout"`
	IdleTimeout  *float64          `json:"idle_timeout"`
	CPU          float64           `json:"cpu"`
	Memory       int               `json:"memory"`
	Workdir      *string           `json:"workdir"`
	BlockNetwork bool              `json:"block_network"`
	CIDRs        []string          `json:"outbound_cidr_allowlist"`
	Domains      []string          `json:"outbound_domain_allowlist"`
	CreatedAt    time.Time         `json:"created_at"`
	StartedAt    *time.Time        `json:"started_at"`
	FinishedAt   *time.Time        `json:"finished_at"`
}

func (s *Sandbox) set(w *sandboxWire) {
	*s = Sandbox{
		ID: w.ID, AppID: w.AppID, Tags: w.Tags, ImageID: w.ImageID, Command: w.Command,
		Isolation: w.Isolation, Status: w.Status, ExitCode: w.ExitCode, Timeout: duration(w.Timeout),
		CPU: w.CPU, MemoryMiB: w.Memory, BlockNetwork: w.BlockNetwork, CreatedAt: w.CreatedAt,
		OutboundCIDRAllowlist: w.CIDRs, OutboundDomainAllowlist: w.Domains,
		c: s.c,
	}
	if w.Name != nil {
		s.Name = *w.Name
	}
	if s.Tags == nil {
		s.Tags = map[string]string{}
	}
	if w.Error != nil {
		s.Error = *w.Error
	}
	if w.IdleTimeout != nil {
		s.IdleTimeout = duration(*w.IdleTimeout)
	}
	if w.Workdir != nil {
		s.Workdir = *w.Workdir
	}
	if w.StartedAt != nil {
		s.StartedAt = *w.StartedAt
	}
	if w.FinishedAt != nil {
		s.FinishedAt = *w.FinishedAt
	}
}

func (c *Client) newSandbox(w *sandboxWire) *Sandbox {
	s := &Sandbox{c: c}
	s.set(w)
	return s
}

// CreateSandbox starts a sandbox and returns once its command has started.
func (c *Client) CreateSandbox(ctx context.Context, opts SandboxOptions) (*Sandbox, error) {
	if opts.App == "" {
		return nil, fmt.Errorf("create sandbox: %w", &APIError{Status: http.StatusBadRequest, Kind: KindInvalid,
			Message: "SandboxOptions.App is required: pass the ID of an app from LookupApp"})
	}
	if opts.Image == "" {
		return nil, fmt.Errorf("create sandbox: %w", &APIError{Status: http.StatusBadRequest, Kind: KindInvalid,
			Message: "SandboxOptions.Image is required: pass the ID of an image from DebianSlim or a snapshot"})
	}
	body := map[string]any{"app_id": opts.App, "image_id": opts.Image}
	if len(opts.Command) > 0 {
		body["command"] = opts.Command
	}
	if opts.Timeout != 0 {
		body["timeout"] = seconds(opts.Timeout)
	}
	if opts.IdleTimeout != 0 {
		body["idle_timeout"] = seconds(opts.IdleTimeout)
	}
	if opts.CPU != 0 {
		body["cpu"] = opts.CPU
	}
	if opts.MemoryMiB != 0 {
		body["memory"] = opts.MemoryMiB
	}
	if opts.Workdir != "" {
		body["workdir"] = opts.Workdir
	}
	if len(opts.Env) > 0 {
		body["env"] = opts.Env
	}
	for k, v := range (NetworkPolicy{opts.BlockNetwork, opts.OutboundCIDRAllowlist, opts.OutboundDomainAllowlist}).body() {
		body[k] = v
	}
	if opts.Name != "" {
		body["name"] = opts.Name
	}
	if len(opts.Tags) > 0 {
		body["tags"] = opts.Tags
	}
	if opts.Isolation != "" {
		body["isolation"] = opts.Isolation
	}
	opts.addPorts(body)
	switch len(opts.GPU) {
	case 0:
	case 1:
		body["gpu"] = opts.GPU[0]
	default:
		body["gpu"] = opts.GPU
	}
	var w sandboxWire
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/sandboxes", json: body}, &w); err != nil {
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	return c.newSandbox(&w), nil
}

// Sandbox returns the sandbox with this id, running or not.
func (c *Client) Sandbox(ctx context.Context, id string) (*Sandbox, error) {
	s := &Sandbox{ID: id, c: c}
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// SandboxFromName returns the running sandbox called name in the app called appName.
func (c *Client) SandboxFromName(ctx context.Context, appName, name string) (*Sandbox, error) {
	app, err := c.LookupApp(ctx, appName, false)
	if err != nil {
		return nil, err
	}
	sbs, err := c.ListSandboxes(ctx, ListOptions{AppID: app.ID, Name: name})
	if err != nil {
		return nil, err
	}
	if len(sbs) == 0 {
		return nil, &APIError{Status: http.StatusNotFound, Kind: KindNotFound,
			Message: fmt.Sprintf("no running sandbox named %q in app %q", name, appName)}
	}
	return sbs[0], nil
}

// ListOptions filters ListSandboxes.
type ListOptions struct {
	AppID string            // only this app's sandboxes
	Name  string            // only the sandbox with this name
	Tags  map[string]string // only sandboxes carrying all these tags
	// IncludeFinished lists ended sandboxes too; by default only live ones are listed.
	IncludeFinished bool
}

// ListSandboxes returns sandboxes, newest first.
func (c *Client) ListSandboxes(ctx context.Context, opts ListOptions) ([]*Sandbox, error) {
	q := url.Values{}
	if opts.AppID != "" {
		q.Set("app_id", opts.AppID)
	}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	for _, k := range sortedKeys(opts.Tags) {
		q.Add("tag", k+"="+opts.Tags[k])
	}
	if opts.IncludeFinished {
		q.Set("include_finished", "1")
	}
	var out struct {
		Sandboxes []*sandboxWire `json:"sandboxes"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/sandboxes", query: q}, &out); err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	sbs := make([]*Sandbox, len(out.Sandboxes))
	for i, w := range out.Sandboxes {
		sbs[i] = c.newSandbox(w)
	}
	return sbs, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (s *Sandbox) path(rest string) string { return "/v1/sandboxes/" + pathEscape(s.ID) + rest }

// fetch makes a call that answers with SANDBOX and updates s from it.
func (s *Sandbox) fetch(ctx context.Context, op string, r request) error {
	var w sandboxWire
	if err := s.c.call(ctx, r, &w); err != nil {
		return fmt.Errorf("%s sandbox %s: %w", op, s.ID, err)
	}
	s.set(&w)
	return nil
}

// Refresh fetches the sandbox's current state.
func (s *Sandbox) Refresh(ctx context.Context) error {
	return s.fetch(ctx, "get", request{method: http.MethodGet, path: s.path("")})
}

// Poll refreshes the sandbox and returns its exit code if it has ended, nil while it runs.
func (s *Sandbox) Poll(ctx context.Context) (*int, error) {
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	if !s.Status.Done() {
		return nil, nil
	}
	return s.exitCode(), nil
}

func (s *Sandbox) exitCode() *int {
	if s.ExitCode != nil {
		return s.ExitCode
	}
	code := -1 // ended without a code: should not happen, but never report success
	return &code
}

// longPoll is how long one wait request asks the server to hold (it caps at 300 s; staying
// under a minute keeps proxies from cutting the request).
const longPoll = 55 * time.Second

// Wait blocks until the sandbox ends and returns its exit code (124 after a timeout, 137 after
// Terminate). Use a context deadline to bound the wait.
func (s *Sandbox) Wait(ctx context.Context) (int, error) {
	for {
		start := time.Now()
		q := url.Values{"wait": {strconv.Itoa(int(longPoll / time.Second))}}
		if err := s.fetch(ctx, "wait for", request{method: http.MethodGet, path: s.path(""), query: q}); err != nil {
			return -1, err
		}
		if s.Status.Done() {
			return *s.exitCode(), nil
		}
		if time.Since(start) < time.Second {
			// The server answered early without an end: don't spin on it.
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return -1, fmt.Errorf("wait for sandbox %s: %w", s.ID, ctx.Err())
			}
		}
	}
}

// Terminate stops the sandbox (its exit code becomes 137). Terminating an ended sandbox is not
// an error.
func (s *Sandbox) Terminate(ctx context.Context) error {
	return s.fetch(ctx, "terminate", request{method: http.MethodPost, path: s.path("/terminate")})
}

// SetTags replaces the sandbox's tags.
func (s *Sandbox) SetTags(ctx context.Context, tags map[string]string) error {
	if tags == nil {
		tags = map[string]string{}
	}
	return s.fetch(ctx, "set tags of", request{method: http.MethodPut, path: s.path("/tags"),
		json: map[string]any{"tags": maps.Clone(tags)}})
}

// NetworkPolicy is a sandbox's outbound network: BlockNetwork (loopback only), or only the
// allowlists' IPv4 ranges and names when either is non-nil, or else everything but what the
// worker always denies (its own and the server's addresses, other sandboxes, metadata,
// private ranges).
type NetworkPolicy struct {
	BlockNetwork            bool
	OutboundCIDRAllowlist   []string
	OutboundDomainAllowlist []string
}

func (p NetworkPolicy) body() map[string]any {
	b := map[string]any{}
	if p.BlockNetwork {
		b["block_network"] = true
	}
	if p.OutboundCIDRAllowlist != nil {
		b["outbound_cidr_allowlist"] = slices.Clone(p.OutboundCIDRAllowlist)
	}
	if p.OutboundDomainAllowlist != nil {
		b["outbound_domain_allowlist"] = slices.Clone(p.OutboundDomainAllowlist)
	}
	return b
}

// SetNetworkAccess replaces the running sandbox's outbound network policy, whole and at once
// (the zero NetworkPolicy opens the network again); connections already open follow it.
func (s *Sandbox) SetNetworkAccess(ctx context.Context, p NetworkPolicy) error {
	return s.fetch(ctx, "set the network policy of", request{method: http.MethodPut, path: s.path("/network"), json: p.body()})
}

// SnapshotFilesystem saves the sandbox's filesystem as it is now, as an image that new
// sandboxes can start from.
func (s *Sandbox) SnapshotFilesystem(ctx context.Context) (*Image, error) {
	var im Image
	if err := s.c.call(ctx, request{method: http.MethodPost, path: s.path("/snapshot")}, &im); err != nil {
		return nil, fmt.Errorf("snapshot sandbox %s: %w", s.ID, err)
	}
	return &im, nil
}

// Logs copies the output of the sandbox's main command to stdout and stderr (either may be
// nil to drop that stream): the last MiB the server keeps, and with follow, what comes after
// until the command exits or ctx ends. Unlike an exec's output, logs may be read many times.
func (s *Sandbox) Logs(ctx context.Context, follow bool, stdout, stderr io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := s.c.send(ctx, request{method: http.MethodGet, path: s.path("/logs"), query: q})
	if err != nil {
		return fmt.Errorf("logs of sandbox %s: %w", s.ID, err)
	}
	defer resp.Body.Close()
	_, err = demux(newLineReader(resp.Body), stdout, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("logs of sandbox %s: %w", s.ID, ctx.Err())
		}
		return fmt.Errorf("logs of sandbox %s: %w", s.ID, err)
	}
	return nil
}

// demux copies output lines of an NDJSON stream to stdout and stderr until the exit line (which
// it returns) or the end of the stream (nil exit, nil error).
func demux(lr *lineReader, stdout, stderr io.Writer) (*streamLine, error) {
	for {
		var line streamLine
		if err := lr.next(&line); err != nil {
			if err == io.EOF {
				return nil, nil
			}
			return nil, err
		}
		if e := line.apiError(); e != nil {
			return nil, e
		}
		if line.ExitCode != nil {
			return &line, nil
		}
		var w io.Writer
		switch line.Stream {
		case "stdout":
			w = stdout
		case "stderr":
			w = stderr
		}
		if w != nil && len(line.Data) > 0 {
			if _, err := w.Write(line.Data); err != nil {
				return nil, &writeError{stream: line.Stream, err: err}
			}
		}
	}
}

// writeError is a failure to write output locally (not the server's doing).
type writeError struct {
	stream string
	err    error
}

func (e *writeError) Error() string { return "writing " + e.stream + ": " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }
