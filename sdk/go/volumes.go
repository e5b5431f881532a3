package gust

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Volumes, as Modal's: named (or ephemeral) file systems of the workspace that functions and
// sandboxes mount. From a client, files are listed, read, uploaded (in one commit), removed
// and copied; each change makes a new version of the volume.

// Volume is a volume of the workspace.
type Volume struct {
	ID        string    `json:"volume_id"`
	Name      string    `json:"name,omitempty"`
	Ephemeral bool      `json:"ephemeral,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	// Version names the current version; Bytes is what its files hold.
	Version string `json:"version_id"`
	Bytes   int64  `json:"bytes"`

	c *Client
}

// VolumeEntry is a file, directory or symlink of a volume (Modal's FileEntry).
type VolumeEntry struct {
	Path  string `json:"path"`
	Type  string `json:"type"` // file, directory or symlink
	Mtime int64  `json:"mtime"`
	Size  int64  `json:"size"`
}

// VolumeUpload is one file for Volume.Upload.
type VolumeUpload struct {
	Path string    // in the volume
	Body io.Reader // its content
	Mode uint32    // permission bits; 0 is 0644
}

// CreateVolume makes a named volume; an existing name is an error satisfying
// errors.Is(err, ErrConflict) unless allowExisting.
func (c *Client) CreateVolume(ctx context.Context, name string, allowExisting bool) (*Volume, error) {
	v := &Volume{c: c}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/volumes", json: map[string]any{"name": name, "allow_existing": allowExisting}}, v); err != nil {
		return nil, fmt.Errorf("create Volume %q: %w", name, err)
	}
	return v, nil
}

// VolumeFromName finds a named volume, creating it if create is set.
func (c *Client) VolumeFromName(ctx context.Context, name string, create bool) (*Volume, error) {
	v := &Volume{c: c}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/volumes/lookup", json: map[string]any{"name": name, "create_if_missing": create}}, v); err != nil {
		return nil, fmt.Errorf("Volume %q: %w", name, err)
	}
	return v, nil
}

// ListVolumes lists the named volumes, newest first.
func (c *Client) ListVolumes(ctx context.Context, opts ObjectListOptions) ([]*Volume, error) {
	var out struct {
		Volumes []*Volume `json:"volumes"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/volumes", query: opts.query()}, &out); err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range out.Volumes {
		v.c = c
	}
	return out.Volumes, nil
}

func (v *Volume) path(sub string) string { return "/v1/volumes/" + v.ID + sub }

// Delete deletes the volume and everything in it.
func (v *Volume) Delete(ctx context.Context) error {
	return v.c.call(ctx, request{method: http.MethodDelete, path: v.path("")}, nil)
}

// Rename gives the volume a new name.
func (v *Volume) Rename(ctx context.Context, name string) error {
	return v.c.call(ctx, request{method: http.MethodPut, path: v.path("/name"), json: map[string]any{"name": name}}, v)
}

// ListDir lists what is under path: a directory's children, or everything below it when
// recursive; a file lists itself.
func (v *Volume) ListDir(ctx context.Context, path string, recursive bool) ([]VolumeEntry, error) {
	q := url.Values{"path": {path}}
	if recursive {
		q.Set("recursive", "1")
	}
	var out struct {
		Entries []VolumeEntry `json:"entries"`
	}
	err := v.c.call(ctx, request{method: http.MethodGet, path: v.path("/entries"), query: q}, &out)
	return out.Entries, err
}

// ReadFile opens a file of the volume; the caller closes it.
func (v *Volume) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := v.c.send(ctx, request{method: http.MethodGet, path: v.path("/content"), query: url.Values{"path": {path}}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Upload sends files and commits them at once; an existing file is an error satisfying
// errors.Is(err, ErrConflict) unless force.
func (v *Volume) Upload(ctx context.Context, files []VolumeUpload, force bool) error {
	changes := make([]map[string]any, 0, len(files))
	for _, f := range files {
		var b struct {
			Blob string `json:"blob"`
		}
		if err := v.c.call(ctx, request{method: http.MethodPost, path: v.path("/blobs"), body: f.Body}, &b); err != nil {
			return fmt.Errorf("upload %s: %w", f.Path, err)
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		changes = append(changes, map[string]any{"op": "put", "entry": map[string]any{"path": f.Path, "type": "file", "blob": b.Blob, "mode": mode}})
	}
	if len(changes) == 0 {
		return nil
	}
	return v.c.call(ctx, request{method: http.MethodPost, path: v.path("/commit"), json: map[string]any{"changes": changes, "force": force}}, v)
}

// Remove removes a file, or a directory with everything in it when recursive.
func (v *Volume) Remove(ctx context.Context, path string, recursive bool) error {
	return v.c.call(ctx, request{method: http.MethodPost, path: v.path("/remove"), json: map[string]any{"path": path, "recursive": recursive}}, v)
}

// Copy copies files within the volume, as cp does: into dst when it is a directory.
func (v *Volume) Copy(ctx context.Context, srcs []string, dst string, recursive bool) error {
	return v.c.call(ctx, request{method: http.MethodPost, path: v.path("/copy"), json: map[string]any{"src_paths": srcs, "dst_path": dst, "recursive": recursive}}, v)
}
