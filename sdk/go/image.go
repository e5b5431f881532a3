package gust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Image kinds.
const (
	ImageDebianSlim = "debian_slim"
	ImageSnapshot   = "snapshot"
)

// Image is a root filesystem that sandboxes start from.
type Image struct {
	ID        string    `json:"image_id"`
	Kind      string    `json:"kind"`      // ImageDebianSlim, "built" or ImageSnapshot
	ParentID  string    `json:"parent_id"` // the image a snapshot was taken over; "" for none
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
}

// ImageOptions configures DebianSlim.
type ImageOptions struct {
	// PythonVersion is the Python the image carries, e.g. "3.11"; "" for the server's default.
	PythonVersion string
	// Logs, if set, receives the build log, one line per log line. Nothing is written when the
	// image is cached.
	Logs io.Writer
}

// DebianSlim returns the Debian slim base image, building it on the server the first time
// (which can take a minute; the build log goes to opts.Logs).
func (c *Client) DebianSlim(ctx context.Context, opts ImageOptions) (*Image, error) {
	body := map[string]any{"kind": ImageDebianSlim}
	if opts.PythonVersion != "" {
		body["python_version"] = opts.PythonVersion
	}
	resp, err := c.send(ctx, request{method: http.MethodPost, path: "/v1/images", json: body})
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	defer resp.Body.Close()
	lr := newLineReader(resp.Body)
	for {
		var line streamLine
		if err := lr.next(&line); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("build image: %w", ctx.Err())
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("build image: the server's stream ended before the image was ready: %w", err)
		}
		switch {
		case line.Image != nil:
			return line.Image, nil
		case line.apiError() != nil:
			return nil, fmt.Errorf("build image: %w", line.apiError())
		case line.Log != nil && opts.Logs != nil:
			if _, err := io.WriteString(opts.Logs, *line.Log+"\n"); err != nil {
				return nil, fmt.Errorf("build image: writing its log: %w", err)
			}
		}
	}
}

// Image returns the image with this id.
func (c *Client) Image(ctx context.Context, id string) (*Image, error) {
	var im Image
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images/" + pathEscape(id)}, &im); err != nil {
		return nil, fmt.Errorf("get image %s: %w", id, err)
	}
	return &im, nil
}

// ListImages returns every image the server knows.
func (c *Client) ListImages(ctx context.Context) ([]*Image, error) {
	var out struct {
		Images []*Image `json:"images"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images"}, &out); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out.Images, nil
}

// ImageDiskUsage returns the bytes the server's image layers take on disk.
func (c *Client) ImageDiskUsage(ctx context.Context) (int64, error) {
	var out struct {
		DiskBytes int64 `json:"disk_bytes"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images"}, &out); err != nil {
		return 0, fmt.Errorf("image disk usage: %w", err)
	}
	return out.DiskBytes, nil
}

// DeleteImage forgets an image; its layers are removed by the next PruneImages unless another
// image uses them. An image a running sandbox uses cannot be deleted (ErrConflict).
func (c *Client) DeleteImage(ctx context.Context, id string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/images/" + pathEscape(id)}, nil); err != nil {
		return fmt.Errorf("delete image %s: %w", id, err)
	}
	return nil
}

// PruneResult says what PruneImages removed.
type PruneResult struct {
	LayersRemoved int   `json:"layers_removed"`
	BlobsRemoved  int   `json:"blobs_removed"`
	FreedBytes    int64 `json:"freed_bytes"`
	KeptBytes     int64 `json:"kept_bytes"`
}

// PruneImages removes image layers that no image uses (image garbage collection), sparing
// those made in the last olderThan (a build in progress makes layers before its image exists).
func (c *Client) PruneImages(ctx context.Context, olderThan time.Duration) (*PruneResult, error) {
	var out PruneResult
	q := url.Values{"older_than": {strconv.FormatFloat(olderThan.Seconds(), 'f', -1, 64)}}
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/images", query: q}, &out); err != nil {
		return nil, fmt.Errorf("prune images: %w", err)
	}
	return &out, nil
}
