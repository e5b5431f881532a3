package containerinit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/gust-run/gust/internal/initproto"
)

// fileError is a failed file operation: an initproto error kind and a message for the user.
type fileError struct {
	kind string
	msg  string
}

func (e *fileError) Error() string { return e.msg }

func ferr(kind, format string, args ...any) *fileError {
	return &fileError{kind, fmt.Sprintf(format, args...)}
}

// fileOp answers a FileOp frame with a FileDone frame on the same channel.
func (s *server) fileOp(ch uint32, payload []byte) {
	defer s.recoverf("file operation on channel %d", ch)
	var resp initproto.FileResponse
	var out []byte
	var req initproto.FileRequest
	data, err := initproto.Unpack(payload, &req)
	if err != nil {
		err = ferr(initproto.ErrInvalid, "bad file request: %v", err)
	} else {
		resp, out, err = doFile(req, data)
	}
	if err != nil {
		resp, out = errorResponse(err), nil
	}
	b, err := initproto.Pack(resp, out)
	if err == nil && len(b) > initproto.MaxPayload {
		err = ferr(initproto.ErrTooLarge, "the answer for %s is too large (%d bytes)", req.Path, len(b))
	}
	if err != nil {
		b, _ = initproto.Pack(errorResponse(err), nil) // two strings: it cannot fail
	}
	if err := s.send(initproto.FileDone, ch, b); err != nil && !errors.Is(err, errOutClosed) {
		s.logf("channel %d: sending file result: %v", ch, err)
	}
}

func errorResponse(err error) initproto.FileResponse {
	var fe *fileError
	if errors.As(err, &fe) {
		return initproto.FileResponse{ErrorKind: fe.kind, Error: fe.msg}
	}
	return initproto.FileResponse{ErrorKind: initproto.ErrOther, Error: err.Error()}
}

// pathErr turns an error from the file system into a fileError that names path.
func pathErr(err error, path string) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ferr(initproto.ErrOther, "%s: %v", path, err)
	}
	kind := initproto.ErrOther
	switch errno {
	case syscall.ENOENT:
		kind = initproto.ErrNotFound
	case syscall.EEXIST:
		kind = initproto.ErrExists
	case syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.ELOOP, syscall.ENAMETOOLONG:
		kind = initproto.ErrInvalid
	}
	return ferr(kind, "%s: %s", errno.Error(), path)
}

func doFile(req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte, error) {
	var none initproto.FileResponse
	if !filepath.IsAbs(req.Path) {
		return none, nil, ferr(initproto.ErrInvalid, "path %q is not absolute", req.Path)
	}
	if strings.IndexByte(req.Path, 0) >= 0 {
		return none, nil, ferr(initproto.ErrInvalid, "path %q holds a NUL byte", req.Path)
	}
	path := filepath.Clean(req.Path)
	switch req.Op {
	case initproto.OpRead:
		out, err := readFile(path, req.Offset, req.Length)
		return none, out, err
	case initproto.OpWrite:
		return none, nil, writeFile(path, data, req.Append, req.Mode)
	case initproto.OpList:
		entries, err := listDir(path)
		return initproto.FileResponse{Entries: entries}, nil, err
	case initproto.OpStat:
		fi, err := os.Lstat(path)
		if err != nil {
			return none, nil, pathErr(err, path)
		}
		st := fileStat(path, fi)
		return initproto.FileResponse{Stat: &st}, nil, nil
	case initproto.OpMkdir:
		return none, nil, mkdir(path, req.Parents, req.Mode)
	case initproto.OpRemove:
		return none, nil, remove(path, req.Recursive)
	default:
		return none, nil, ferr(initproto.ErrInvalid, "unknown file operation %q", req.Op)
	}
}

func readFile(path string, offset, length int64) ([]byte, error) {
	if offset < 0 || length < 0 {
		return nil, ferr(initproto.ErrInvalid, "offset and length must not be negative (got %d, %d)", offset, length)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathErr(err, path)
	}
	switch {
	case fi.IsDir():
		return nil, ferr(initproto.ErrInvalid, "is a directory: %s", path)
	case fi.Mode()&(fs.ModeNamedPipe|fs.ModeSocket) != 0:
		return nil, ferr(initproto.ErrInvalid, "not a regular file: %s", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, pathErr(err, path)
	}
	defer func() { _ = f.Close() }() // read only
	if fi.Mode().IsRegular() && fi.Size() > 0 {
		n := max(fi.Size()-offset, 0)
		if length > 0 && length < n {
			n = length
		}
		if n > initproto.MaxFileBytes {
			return nil, ferr(initproto.ErrTooLarge, "%s: reading %d bytes exceeds the limit of %d bytes; read it in parts with offset and length",
				path, n, initproto.MaxFileBytes)
		}
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, offset)
		if err != nil && !errors.Is(err, io.EOF) { // EOF: the file shrank since Stat
			return nil, pathErr(err, path)
		}
		return buf[:m], nil
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return nil, pathErr(err, path)
		}
	}
	// Files without a size (procfs, devices) are read to their end or past the limit.
	limit := int64(initproto.MaxFileBytes + 1)
	if length > 0 && length < limit {
		limit = length
	}
	out, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, pathErr(err, path)
	}
	if len(out) > initproto.MaxFileBytes {
		return nil, ferr(initproto.ErrTooLarge, "%s: reading it exceeds the limit of %d bytes; read it in parts with offset and length",
			path, initproto.MaxFileBytes)
	}
	return out, nil
}

func writeFile(path string, data []byte, appendTo bool, mode uint32) error {
	if len(data) > initproto.MaxFileBytes {
		return ferr(initproto.ErrTooLarge, "%s: writing %d bytes exceeds the limit of %d bytes", path, len(data), initproto.MaxFileBytes)
	}
	perm := os.FileMode(0o644)
	if mode != 0 {
		perm = os.FileMode(mode & 0o777)
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, perm)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return ferr(initproto.ErrNotFound, "parent directory does not exist: %s", filepath.Dir(path))
		}
		return pathErr(err, path)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write failed already: that is the error to report
		return pathErr(err, path)
	}
	if mode != 0 {
		// The umask trimmed the mode of a new file, and an existing one kept its own.
		if err := f.Chmod(perm); err != nil {
			_ = f.Close() // the chmod failed already: that is the error to report
			return pathErr(err, path)
		}
	}
	if err := f.Close(); err != nil {
		return pathErr(err, path)
	}
	return nil
}

func listDir(path string) ([]initproto.FileStat, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathErr(err, path)
	}
	if !fi.IsDir() {
		return nil, ferr(initproto.ErrInvalid, "not a directory: %s", path)
	}
	ents, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, pathErr(err, path)
	}
	out := make([]initproto.FileStat, 0, len(ents))
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue // removed since it was listed
		}
		out = append(out, fileStat(filepath.Join(path, e.Name()), info))
	}
	return out, nil
}

func fileStat(path string, fi fs.FileInfo) initproto.FileStat {
	st := initproto.FileStat{
		Name:  filepath.Base(path),
		Path:  path,
		Size:  fi.Size(),
		Mode:  uint32(fi.Mode().Perm()),
		MTime: fi.ModTime().UnixNano(),
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.Mode = sys.Mode & 0o7777
	}
	switch {
	case fi.Mode().IsRegular():
		st.Type = "file"
	case fi.IsDir():
		st.Type = "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		st.Type = "symlink"
	default:
		st.Type = "other"
	}
	return st
}

func mkdir(path string, parents bool, mode uint32) error {
	perm := os.FileMode(0o755)
	if mode != 0 {
		perm = os.FileMode(mode & 0o777)
	}
	if fi, err := os.Stat(path); err == nil {
		if !fi.IsDir() {
			return ferr(initproto.ErrExists, "file exists and is not a directory: %s", path)
		}
		if parents {
			return nil
		}
		return ferr(initproto.ErrExists, "directory already exists: %s", path)
	}
	var err error
	if parents {
		err = os.MkdirAll(path, perm)
	} else {
		err = os.Mkdir(path, perm)
	}
	if err != nil {
		if !parents && errors.Is(err, syscall.ENOENT) {
			return ferr(initproto.ErrNotFound, "parent directory does not exist: %s (pass parents to create it)", filepath.Dir(path))
		}
		if errors.Is(err, syscall.EEXIST) {
			return ferr(initproto.ErrExists, "file exists: %s", path)
		}
		return pathErr(err, path)
	}
	if mode != 0 {
		if err := os.Chmod(path, perm); err != nil {
			return pathErr(err, path)
		}
	}
	return nil
}

func remove(path string, recursive bool) error {
	if path == "/" {
		return ferr(initproto.ErrInvalid, "refusing to remove /")
	}
	if _, err := os.Lstat(path); err != nil {
		return pathErr(err, path)
	}
	if recursive {
		if err := os.RemoveAll(path); err != nil {
			return pathErr(err, path)
		}
		return nil
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return ferr(initproto.ErrInvalid, "directory not empty: %s; pass recursive to remove it and its contents", path)
		}
		return pathErr(err, path)
	}
	return nil
}
