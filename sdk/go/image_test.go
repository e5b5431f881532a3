package gust

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestDebianSlim(t *testing.T) {
	image := map[string]any{"image_id": "im-abc", "kind": "debian_slim", "parent_id": nil, "created_at": "2026-01-01T00:00:00Z", "size_bytes": 1234}
	tests := []struct {
		name     string
		lines    []any
		raw      string
		wantLogs string
		wantErr  error
		anyErr   bool
	}{
		{name: "cached", lines: []any{map[string]any{"image": image}}},
		{name: "built", lines: []any{map[string]any{"log": "Building image im-abc"}, map[string]any{"log": "I: Retrieving"}, map[string]any{"image": image}},
			wantLogs: "Building image im-abc\nI: Retrieving\n"},
		{name: "error line", lines: []any{map[string]any{"log": "Building"}, map[string]any{"error": map[string]string{"kind": "unavailable", "message": "debootstrap failed"}}},
			wantLogs: "Building\n", wantErr: ErrUnavailable},
		{name: "cut off", lines: []any{map[string]any{"log": "Building"}}, wantLogs: "Building\n", wantErr: io.ErrUnexpectedEOF},
		{name: "cut inside a line", lines: []any{map[string]any{"log": "Building"}}, raw: `{"image": {"image_`, wantLogs: "Building\n", wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			f.handle("POST /v1/images", func(w http.ResponseWriter, r *http.Request) {
				b := decodeBody(t, r)
				if b["kind"] != "debian_slim" || b["python_version"] != "3.11" {
					t.Errorf("body %v", b)
				}
				n := startNDJSON(w)
				for _, l := range tt.lines {
					n.send(l)
				}
				w.Write([]byte(tt.raw))
			})
			var logs strings.Builder
			im, err := c.DebianSlim(t.Context(), ImageOptions{PythonVersion: "3.11", Logs: &logs})
			if logs.String() != tt.wantLogs {
				t.Errorf("logs %q, want %q", logs.String(), tt.wantLogs)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || im.ID != "im-abc" || im.Kind != ImageDebianSlim || im.ParentID != "" || im.SizeBytes != 1234 {
				t.Fatalf("DebianSlim = %+v, %v", im, err)
			}
		})
	}
}

func TestDebianSlimValidation(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("POST /v1/images", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, 400, "invalid", "python_version 2.7 is not available; this host offers 3.11")
	})
	_, err := c.DebianSlim(t.Context(), ImageOptions{PythonVersion: "2.7"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "this host offers 3.11") {
		t.Fatalf("error %v", err)
	}
}
