package gust

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// MaxTransfer is the most one file request carries; ReadFile and WriteFile split larger files.
const MaxTransfer = 64 << 20

// File types in FileInfo.Type.
const (
	FileTypeFile      = "file"
	FileTypeDirectory = "directory"
	FileTypeSymlink   = "symlink"
	FileTypeOther     = "other"
)

// FileInfo describes a file in a sandbox.
type FileInfo struct {
	Name    string      // base name
	Path    string      // absolute path in the sandbox
	Type    string      // one of the FileType* constants
	Size    int64       // bytes
	Mode    fs.FileMode // permission bits, with fs.ModeDir or fs.ModeSymlink for those types
	ModTime time.Time
}

// IsDir reports whether the file is a directory.
func (f *FileInfo) IsDir() bool { return f.Type == FileTypeDirectory }

// statWire is STAT as the API writes it.
type statWire struct {
	Name  string    `json:"name"`
	Path  string    `json:"path"`
	Type  string    `json:"type"`
	Size  int64     `json:"size"`
	Mode  uint32    `json:"mode"`
	MTime time.Time `json:"mtime"`
}

func (w *statWire) info() *FileInfo {
	m := fs.FileMode(w.Mode & 0o777)
	if w.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if w.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if w.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch w.Type {
	case FileTypeDirectory:
		m |= fs.ModeDir
	case FileTypeSymlink:
		m |= fs.ModeSymlink
	case FileTypeOther:
		m |= fs.ModeIrregular
	}
	return &FileInfo{Name: w.Name, Path: w.Path, Type: w.Type, Size: w.Size, Mode: m, ModTime: w.MTime}
}

// unixMode turns Go's mode bits into the API's octal permission bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func fileQuery(path string) url.Values { return url.Values{"path": {path}} }

// ReadFile returns the contents of a file in the sandbox. path must be absolute. A missing
// file is an error satisfying errors.Is(err, ErrNotFound); a directory, ErrInvalid.
func (s *Sandbox) ReadFile(ctx context.Context, path string) ([]byte, error) {
	var buf bytes.Buffer
	err := s.readRange(ctx, path, 0, 0, &buf)
	if errors.Is(err, ErrTooLarge) {
		// Above one transfer: read it in ranges.
		buf.Reset()
		err = s.ReadFileTo(ctx, path, &buf)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadFileTo copies a file of any size from the sandbox to w, in ranges of MaxTransfer bytes.
func (s *Sandbox) ReadFileTo(ctx context.Context, path string, w io.Writer) error {
	st, err := s.Stat(ctx, path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("read %s in sandbox %s: %w", path, s.ID, &APIError{Status: http.StatusBadRequest, Kind: KindInvalid,
			Message: path + " is a directory; use ListFiles"})
	}
	for off := int64(0); off < st.Size; off += MaxTransfer {
		if err := s.readRange(ctx, path, off, min(MaxTransfer, st.Size-off), w); err != nil {
			return err
		}
	}
	return nil
}

// ReadFileRange returns up to length bytes of a file from offset (length 0: to the end, up to
// MaxTransfer).
func (s *Sandbox) ReadFileRange(ctx context.Context, path string, offset, length int64) ([]byte, error) {
	var buf bytes.Buffer
	if err := s.readRange(ctx, path, offset, length, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (s *Sandbox) readRange(ctx context.Context, path string, offset, length int64, w io.Writer) error {
	q := fileQuery(path)
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if length > 0 {
		q.Set("length", strconv.FormatInt(length, 10))
	}
	resp, err := s.c.send(ctx, request{method: http.MethodGet, path: s.path("/files"), query: q})
	if err != nil {
		return fmt.Errorf("read %s in sandbox %s: %w", path, s.ID, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("read %s in sandbox %s: %w", path, s.ID, err)
	}
	return nil
}

// WriteFile writes data to a file in the sandbox, creating or truncating it, with mode's
// permission bits (0 for the server's default, 0644) when it creates it. Its directory must
// exist. Data above MaxTransfer is sent in parts.
func (s *Sandbox) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error {
	for off := 0; ; off += MaxTransfer {
		end := min(off+MaxTransfer, len(data))
		q := fileQuery(path)
		if off > 0 {
			q.Set("append", "1")
		} else if mode != 0 {
			q.Set("mode", fmt.Sprintf("%04o", unixMode(mode)))
		}
		err := s.c.call(ctx, request{method: http.MethodPut, path: s.path("/files"), query: q, body: bytes.NewReader(data[off:end])}, nil)
		if err != nil {
			return fmt.Errorf("write %s in sandbox %s: %w", path, s.ID, err)
		}
		if end == len(data) {
			return nil
		}
	}
}

// AppendFile appends data to a file in the sandbox, creating it if missing.
func (s *Sandbox) AppendFile(ctx context.Context, path string, data []byte) error {
	for off := 0; ; off += MaxTransfer {
		end := min(off+MaxTransfer, len(data))
		q := fileQuery(path)
		q.Set("append", "1")
		err := s.c.call(ctx, request{method: http.MethodPut, path: s.path("/files"), query: q, body: bytes.NewReader(data[off:end])}, nil)
		if err != nil {
			return fmt.Errorf("append to %s in sandbox %s: %w", path, s.ID, err)
		}
		if end == len(data) {
			return nil
		}
	}
}

// ListFiles returns the entries of a directory in the sandbox.
func (s *Sandbox) ListFiles(ctx context.Context, path string) ([]*FileInfo, error) {
	var out struct {
		Entries []*statWire `json:"entries"`
	}
	if err := s.c.call(ctx, request{method: http.MethodGet, path: s.path("/files/list"), query: fileQuery(path)}, &out); err != nil {
		return nil, fmt.Errorf("list %s in sandbox %s: %w", path, s.ID, err)
	}
	infos := make([]*FileInfo, len(out.Entries))
	for i, e := range out.Entries {
		infos[i] = e.info()
	}
	return infos, nil
}

// Stat describes a file in the sandbox.
func (s *Sandbox) Stat(ctx context.Context, path string) (*FileInfo, error) {
	var w statWire
	if err := s.c.call(ctx, request{method: http.MethodGet, path: s.path("/files/stat"), query: fileQuery(path)}, &w); err != nil {
		return nil, fmt.Errorf("stat %s in sandbox %s: %w", path, s.ID, err)
	}
	return w.info(), nil
}

// MakeDirectory creates a directory in the sandbox, and with parents its missing parents too
// (and then an existing directory is not an error).
func (s *Sandbox) MakeDirectory(ctx context.Context, path string, parents bool) error {
	err := s.c.call(ctx, request{method: http.MethodPost, path: s.path("/files/mkdir"), json: map[string]any{"path": path, "parents": parents}}, nil)
	if err != nil {
		return fmt.Errorf("mkdir %s in sandbox %s: %w", path, s.ID, err)
	}
	return nil
}

// Remove deletes a file or empty directory in the sandbox, or with recursive a directory and
// everything in it.
func (s *Sandbox) Remove(ctx context.Context, path string, recursive bool) error {
	q := fileQuery(path)
	if recursive {
		q.Set("recursive", "1")
	}
	if err := s.c.call(ctx, request{method: http.MethodDelete, path: s.path("/files"), query: q}, nil); err != nil {
		return fmt.Errorf("remove %s in sandbox %s: %w", path, s.ID, err)
	}
	return nil
}
