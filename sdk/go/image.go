package gust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	Kind      string    `json:"kind"`      // ImageDebianSlim or ImageSnapshot
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
