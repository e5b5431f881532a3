package gust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// App states.
const (
	AppDeployed  = "deployed"
	AppEphemeral = "ephemeral"
	AppStopped   = "stopped"
)

// App groups sandboxes and functions under a name.
type App struct {
	ID        string
	Name      string
	CreatedAt time.Time
	// State is AppDeployed, AppEphemeral or AppStopped ("" from LookupApp, which does not
	// say).
	State string
	// FunctionCount and ContainerCount are the app's functions and their running containers.
	FunctionCount  int
	ContainerCount int
	// Functions are the app's functions with their stats; only GetApp fills them in.
	Functions []*Function
}

// appWire is an app as the API writes it. The list gives counts; GET /v1/apps/{id} the
// function docs; both are accepted in either place.
type appWire struct {
	ID             string          `json:"app_id"`
	Name           string          `json:"name"`
	CreatedAt      time.Time       `json:"created_at"`
	State          string          `json:"state"`
	Functions      json.RawMessage `json:"functions"`        // a count, a list of Function docs, or name → doc
	Details        json.RawMessage `json:"function_details"` // GET /v1/apps/{id}: the Function docs
	Containers     json.RawMessage `json:"containers"`       // a count (or a list)
	FunctionCount  *int            `json:"function_count"`
	ContainerCount *int            `json:"container_count"`
	App            *appWire        `json:"app"` // GET /v1/apps/{id} may nest the app beside its functions
}

// UnmarshalJSON reads an app in any of the shapes the API gives it.
func (a *App) UnmarshalJSON(b []byte) error {
	var w appWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.App != nil {
		// {"app": {...}, "functions": [...]}: the app's fields from inside, the rest beside.
		inner := *w.App
		if len(w.Functions) > 0 {
			inner.Functions = w.Functions
		}
		if len(w.Details) > 0 {
			inner.Details = w.Details
		}
		if len(w.Containers) > 0 {
			inner.Containers = w.Containers
		}
		w = inner
	}
	*a = App{ID: w.ID, Name: w.Name, CreatedAt: w.CreatedAt, State: w.State}
	if err := a.setFunctions(w.Functions); err != nil {
		return fmt.Errorf("app %s: functions: %w", w.ID, err)
	}
	if len(w.Details) > 0 && string(w.Details) != "null" {
		count := a.FunctionCount
		if err := a.setFunctions(w.Details); err != nil {
			return fmt.Errorf("app %s: function_details: %w", w.ID, err)
		}
		if _, err := strconv.Atoi(string(w.Functions)); err == nil {
			a.FunctionCount = count // the server's count of live functions, beside their details
		}
	}
	if w.FunctionCount != nil {
		a.FunctionCount = *w.FunctionCount
	}
	switch n, kind := countOf(w.Containers); {
	case w.ContainerCount != nil:
		a.ContainerCount = *w.ContainerCount
	case kind:
		a.ContainerCount = n
	default:
		for _, f := range a.Functions {
			a.ContainerCount += f.Stats.Containers
		}
	}
	return nil
}

// setFunctions reads "functions": a count, a list of Function docs or a map of them by name.
func (a *App) setFunctions(raw json.RawMessage) error {
	if n, err := strconv.Atoi(string(raw)); err == nil {
		a.FunctionCount = n
		return nil
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	switch raw[0] {
	case '[':
		if err := json.Unmarshal(raw, &a.Functions); err != nil {
			return err
		}
	case '{':
		var m map[string]*Function
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		for name, f := range m {
			if f == nil {
				continue
			}
			if f.Name == "" {
				f.Name = name
			}
			a.Functions = append(a.Functions, f)
		}
	default:
		return fmt.Errorf("unexpected %s", raw)
	}
	sort.Slice(a.Functions, func(i, j int) bool { return a.Functions[i].Name < a.Functions[j].Name })
	a.FunctionCount = len(a.Functions)
	return nil
}

// countOf reads a JSON number, or counts a JSON array.
func countOf(raw json.RawMessage) (int, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	if n, err := strconv.Atoi(string(raw)); err == nil {
		return n, true
	}
	if raw[0] == '[' {
		var l []json.RawMessage
		if json.Unmarshal(raw, &l) == nil {
			return len(l), true
		}
	}
	return 0, false
}

// LookupApp returns the app called name, creating it if createIfMissing is set. A missing app
// is an error satisfying errors.Is(err, ErrNotFound).
func (c *Client) LookupApp(ctx context.Context, name string, createIfMissing bool) (*App, error) {
	var a App
	body := map[string]any{"name": name, "create_if_missing": createIfMissing}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/apps/lookup", json: body}, &a); err != nil {
		return nil, fmt.Errorf("look up app %q: %w", name, err)
	}
	return &a, nil
}

// ListApps returns every app, with its state and function and container counts.
func (c *Client) ListApps(ctx context.Context) ([]*App, error) {
	var out struct {
		Apps []*App `json:"apps"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/apps"}, &out); err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	return out.Apps, nil
}

// GetApp returns an app by id, with its functions and their stats (pending and running inputs,
// containers, and the autoscaler's last reason).
func (c *Client) GetApp(ctx context.Context, appID string) (*App, error) {
	var a App
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/apps/" + pathEscape(appID)}, &a); err != nil {
		return nil, fmt.Errorf("app %s: %w", appID, err)
	}
	for _, f := range a.Functions {
		f.c = c
		if f.AppID == "" {
			f.AppID = a.ID
		}
	}
	return &a, nil
}

// StopApp stops an app's functions: their containers go and their pending inputs end
// terminated. With no functionIDs, it stops all of them (the server decides which: see
// docs/functions.md); otherwise only those.
func (c *Client) StopApp(ctx context.Context, appID string, functionIDs ...string) error {
	body := map[string]any{}
	if len(functionIDs) > 0 {
		body["functions"] = functionIDs
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/apps/" + pathEscape(appID) + "/stop", json: body}, nil); err != nil {
		return fmt.Errorf("stop app %s: %w", appID, err)
	}
	return nil
}

// AppLog is one piece of output of an app's functions, as the server keeps it.
type AppLog struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	FunctionID string    `json:"function_id"`
	Function   string    `json:"function"` // the function's name, where the server gives it
	InputID    string    `json:"input_id"`
	Stream     string    `json:"stream"` // "stdout" or "stderr"
	Data       string    `json:"data"`
}

// AppLogsOptions configures AppLogs.
type AppLogsOptions struct {
	// Follow keeps the stream open for new output until ctx ends (or the server ends it).
	Follow bool
	// Since starts after the log with this sequence number (0: from the oldest kept).
	Since int64
}

// AppLogs yields the output of an app's functions, oldest first. With opts.Follow it goes on
// as new output comes. A stream that breaks is reopened after the last log seen; an error ends
// the sequence as its last element. Ending ctx while following ends the sequence without
// an error.
func (c *Client) AppLogs(ctx context.Context, appID string, opts AppLogsOptions) iter.Seq2[*AppLog, error] {
	return func(yield func(*AppLog, error) bool) {
		last := opts.Since
		broken := 0
		for {
			q := url.Values{}
			if opts.Follow {
				q.Set("follow", "1")
			}
			if last > 0 {
				q.Set("since", strconv.FormatInt(last, 10))
			}
			resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/apps/" + pathEscape(appID) + "/logs", query: q})
			if err != nil {
				if opts.Follow && ctx.Err() != nil {
					return
				}
				yield(nil, fmt.Errorf("logs of app %s: %w", appID, err))
				return
			}
			stop, err := c.readAppLogs(resp.Body, &last, yield)
			resp.Body.Close()
			switch {
			case stop:
				return
			case opts.Follow && ctx.Err() != nil:
				return
			case err == nil:
				return // the server ended the stream
			case ctx.Err() != nil:
				yield(nil, fmt.Errorf("logs of app %s: %w", appID, ctx.Err()))
				return
			}
			if _, ok := errorsAsAPI(err); ok || broken >= maxResumes {
				yield(nil, fmt.Errorf("logs of app %s: %w", appID, err))
				return
			}
			broken++
			select {
			case <-time.After(time.Duration(broken) * 100 * time.Millisecond):
			case <-ctx.Done():
				if !opts.Follow {
					yield(nil, fmt.Errorf("logs of app %s: %w", appID, ctx.Err()))
				}
				return
			}
		}
	}
}

// readAppLogs yields the logs of one stream after *last, advancing it. stop is set when the
// consumer stopped.
func (c *Client) readAppLogs(body io.Reader, last *int64, yield func(*AppLog, error) bool) (stop bool, err error) {
	lr := newLineReader(body)
	for {
		var line struct {
			Log   *AppLog         `json:"log"`
			Error json.RawMessage `json:"error"`
		}
		if err := lr.next(&line); err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err
		}
		if e := (&streamLine{Error: line.Error}).apiError(); e != nil {
			return false, e
		}
		if line.Log == nil || (line.Log.Seq != 0 && line.Log.Seq <= *last) {
			continue
		}
		if line.Log.Seq > *last {
			*last = line.Log.Seq
		}
		if !yield(line.Log, nil) {
			return true, nil
		}
	}
}
