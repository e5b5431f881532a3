package gust

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"testing"
)

func TestFiles(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	files := map[string][]byte{"/etc/hostname": []byte("box\n"), "/big": bytes.Repeat([]byte{1, 2, 3}, 1000)}
	modes := map[string]string{}
	f.handle("GET /v1/sandboxes/sb-1/files", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		data, ok := files[q.Get("path")]
		if !ok {
			writeErr(w, 404, "not_found", "no such file "+q.Get("path"))
			return
		}
		if q.Get("path") == "/big" && !q.Has("length") {
			writeErr(w, 413, "too_large", "file is above 64 MiB: read it in ranges")
			return
		}
		off, _ := strconv.Atoi(q.Get("offset"))
		n, _ := strconv.Atoi(q.Get("length"))
		data = data[min(off, len(data)):]
		if n > 0 {
			data = data[:min(n, len(data))]
		}
		w.Write(data)
	})
	f.handle("PUT /v1/sandboxes/sb-1/files", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		b, _ := io.ReadAll(r.Body)
		if q.Get("append") == "1" {
			files[q.Get("path")] = append(files[q.Get("path")], b...)
		} else {
			files[q.Get("path")] = b
		}
		modes[q.Get("path")] = q.Get("mode")
		w.WriteHeader(204)
	})
	f.handle("GET /v1/sandboxes/sb-1/files/stat", func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		writeJSON(w, 200, map[string]any{"name": p[1:], "path": p, "type": "file", "size": len(files[p]), "mode": 0o4755, "mtime": "2026-01-01T00:00:00.5Z"})
	})
	f.handle("GET /v1/sandboxes/sb-1/files/list", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"entries": []any{
			map[string]any{"name": "d", "path": "/d", "type": "directory", "size": 4096, "mode": 0o755, "mtime": "2026-01-01T00:00:00Z"},
			map[string]any{"name": "l", "path": "/l", "type": "symlink", "size": 3, "mode": 0o777, "mtime": "2026-01-01T00:00:00Z"},
		}})
	})
	var mkdir, removed map[string]any
	f.handle("POST /v1/sandboxes/sb-1/files/mkdir", func(w http.ResponseWriter, r *http.Request) {
		mkdir = decodeBody(t, r)
		w.WriteHeader(204)
	})
	f.handle("DELETE /v1/sandboxes/sb-1/files", func(w http.ResponseWriter, r *http.Request) {
		removed = map[string]any{"path": r.URL.Query().Get("path"), "recursive": r.URL.Query().Get("recursive")}
		w.WriteHeader(204)
	})
	ctx := t.Context()

	if b, err := sb.ReadFile(ctx, "/etc/hostname"); err != nil || string(b) != "box\n" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if _, err := sb.ReadFile(ctx, "/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if b, err := sb.ReadFile(ctx, "/big"); err != nil || !bytes.Equal(b, files["/big"]) {
		t.Fatalf("ReadFile of a too large file by ranges: %d bytes, %v", len(b), err)
	}
	if b, err := sb.ReadFileRange(ctx, "/etc/hostname", 1, 2); err != nil || string(b) != "ox" {
		t.Fatalf("ReadFileRange = %q, %v", b, err)
	}
	if err := sb.WriteFile(ctx, "/x.sh", []byte("#!/bin/sh\n"), 0o755); err != nil || string(files["/x.sh"]) != "#!/bin/sh\n" || modes["/x.sh"] != "0755" {
		t.Fatalf("WriteFile: %v %q mode %q", err, files["/x.sh"], modes["/x.sh"])
	}
	if err := sb.WriteFile(ctx, "/empty", nil, 0); err != nil || modes["/empty"] != "" {
		t.Fatalf("WriteFile empty: %v mode %q", err, modes["/empty"])
	}
	if _, ok := files["/empty"]; !ok {
		t.Fatal("empty file not written")
	}
	if err := sb.AppendFile(ctx, "/x.sh", []byte("echo\n")); err != nil || string(files["/x.sh"]) != "#!/bin/sh\necho\n" {
		t.Fatalf("AppendFile: %v %q", err, files["/x.sh"])
	}
	st, err := sb.Stat(ctx, "/x.sh")
	if err != nil || st.Size != 15 || st.Mode != 0o755|fs.ModeSetuid || st.IsDir() || st.ModTime.Nanosecond() != 5e8 {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	ents, err := sb.ListFiles(ctx, "/")
	if err != nil || len(ents) != 2 || !ents[0].IsDir() || ents[0].Mode != fs.ModeDir|0o755 || ents[1].Mode&fs.ModeSymlink == 0 {
		t.Fatalf("ListFiles = %+v, %v", ents, err)
	}
	if err := sb.MakeDirectory(ctx, "/a/b", true); err != nil || mkdir["path"] != "/a/b" || mkdir["parents"] != true {
		t.Fatalf("MakeDirectory: %v %v", err, mkdir)
	}
	if err := sb.Remove(ctx, "/a", true); err != nil || removed["path"] != "/a" || removed["recursive"] != "1" {
		t.Fatalf("Remove: %v %v", err, removed)
	}
}
