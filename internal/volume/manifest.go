// Package volume is what gust's Volumes are made of, shared by the server and the worker: a
// version of a volume is a manifest (every path with its type, mode, owner, size, mtime and
// the SHA-256 of its content), itself stored by content; file contents are blobs named by their
// SHA-256, kept beside image layers (Blobs), so that any worker that sees the layer store
// mounts any version. A commit is a list of changes (puts and deletes) that the server
// applies to the newest version: last write wins per file. The worker materializes a version
// as a directory of hard links (Materialize) and finds what a container changed in the upper
// layer of its overlay (Scan). Imported by internal/api, internal/worker and cmd/gust (the
// volume benchmark's cleanup).
package volume

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// EntryType is what a path is, as Modal's FileEntryType names it.
type EntryType string

// The entry types.
const (
	File    EntryType = "file"
	Dir     EntryType = "directory"
	Symlink EntryType = "symlink"
)

// Entry is one path of a version.
type Entry struct {
	Path   string    `json:"path"` // relative, clean, without a leading slash
	Type   EntryType `json:"type"`
	Mode   uint32    `json:"mode"` // permission bits
	Size   int64     `json:"size"`
	Mtime  int64     `json:"mtime"` // unix seconds
	Blob   string    `json:"blob,omitempty"`
	Target string    `json:"target,omitempty"` // a symlink's
	// UID and GID own the path, as a container sees them (0 is root; see IDs).
	UID int `json:"uid,omitempty"`
	GID int `json:"gid,omitempty"`
}

// MaxID is the highest uid or gid a volume's file may have: containers see ids 0–65535.
const MaxID = 65535

// IDs maps the owners of a volume's files between the host and containers: id x inside is
// Base+x on the host for x up to Size-1 (runc containers' user namespace, container.RootOnHost);
// any other host id reads as root.
type IDs struct{ Base, Size int }

// Inside returns the id a container sees for host id h.
func (m IDs) Inside(h uint32) int {
	x := int(h) - m.Base
	if x < 0 || x >= m.Size || x > MaxID {
		return 0
	}
	return x
}

// Host returns the host id of id x inside (root's for an id out of range).
func (m IDs) Host(x int) int {
	if x < 0 || x >= m.Size || x > MaxID {
		return m.Base
	}
	return m.Base + x
}

// Manifest is a version: its entries by path.
type Manifest struct {
	Entries map[string]Entry
}

// NewManifest returns an empty version.
func NewManifest() *Manifest { return &Manifest{Entries: map[string]Entry{}} }

// Bytes is what the version's files hold.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, e := range m.Entries {
		if e.Type == File {
			n += e.Size
		}
	}
	return n
}

// Sorted returns the entries in path order (a directory before what it holds).
func (m *Manifest) Sorted() []Entry {
	out := make([]Entry, 0, len(m.Entries))
	for _, e := range m.Entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Encode is the manifest's stored form: JSON of the sorted entries.
func (m *Manifest) Encode() ([]byte, error) {
	b, err := json.Marshal(struct {
		Entries []Entry `json:"entries"`
	}{m.Sorted()})
	if err != nil {
		return nil, fmt.Errorf("volume: encode manifest: %w", err)
	}
	return b, nil
}

// DecodeManifest reads a stored manifest.
func DecodeManifest(b []byte) (*Manifest, error) {
	var v struct {
		Entries []Entry `json:"entries"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("volume: corrupt manifest: %w", err)
	}
	m := NewManifest()
	for _, e := range v.Entries {
		m.Entries[e.Path] = e
	}
	return m, nil
}

// CleanPath turns a path in a volume ("/a/b", "a/b/", "./a") into its key ("a/b"); the root is
// "". A path that climbs out ("..") or holds a NUL is refused.
func CleanPath(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", errdefs.Invalid("path %q holds a NUL byte", p)
	}
	c := path.Clean("/" + p)
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", errdefs.Invalid("path %q climbs out of the volume with '..'", p)
		}
	}
	return strings.TrimPrefix(c, "/"), nil
}

// under reports whether p is dir or below it ("" is the root, above everything).
func under(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

// Get returns the entry at p; the root is a directory.
func (m *Manifest) Get(p string) (Entry, bool) {
	if p == "" {
		return Entry{Path: "", Type: Dir, Mode: 0o755}, true
	}
	e, ok := m.Entries[p]
	return e, ok
}

// List returns the entries below dir: its children, or everything below it when recursive.
func (m *Manifest) List(dir string, recursive bool) []Entry {
	var out []Entry
	for _, e := range m.Sorted() {
		if e.Path == dir || !under(e.Path, dir) {
			continue
		}
		rest := e.Path
		if dir != "" {
			rest = e.Path[len(dir)+1:]
		}
		if recursive || !strings.Contains(rest, "/") {
			out = append(out, e)
		}
	}
	return out
}

// Remove deletes p and everything below it, and reports whether anything went.
func (m *Manifest) Remove(p string) bool {
	found := false
	for k := range m.Entries {
		if under(k, p) {
			delete(m.Entries, k)
			found = true
		}
	}
	return found
}

// Put adds e, making its missing parent directories and replacing what stood at its path
// (a directory with all it holds) or at a parent's (a file where a directory must be).
func (m *Manifest) Put(e Entry, mtime int64) {
	if e.Path == "" {
		return
	}
	parts := strings.Split(e.Path, "/")
	for i := 1; i < len(parts); i++ {
		dir := strings.Join(parts[:i], "/")
		if cur, ok := m.Entries[dir]; ok && cur.Type == Dir {
			continue
		}
		delete(m.Entries, dir)
		m.Entries[dir] = Entry{Path: dir, Type: Dir, Mode: 0o755, Mtime: mtime}
	}
	if cur, ok := m.Entries[e.Path]; ok && (cur.Type == Dir) != (e.Type == Dir) {
		m.Remove(e.Path)
	}
	m.Entries[e.Path] = e
}

// Op is what a change does.
type Op string

// The ops: put an entry, or delete a path and all below it.
const (
	OpPut    Op = "put"
	OpDelete Op = "delete"
)

// Change is one step of a commit.
type Change struct {
	Op    Op    `json:"op"`
	Entry Entry `json:"entry"`
}

// Check validates a change as a client or worker sent it, cleaning its path.
func (c *Change) Check() error {
	p, err := CleanPath(c.Entry.Path)
	if err != nil {
		return err
	}
	c.Entry.Path = p
	switch c.Op {
	case OpDelete:
		if p == "" {
			return errdefs.Invalid("a delete needs a path below the volume's root")
		}
		return nil
	case OpPut:
	default:
		return errdefs.Invalid("a change's op must be %q or %q, got %q", OpPut, OpDelete, c.Op)
	}
	if p == "" {
		return errdefs.Invalid("a put needs a path below the volume's root")
	}
	if c.Entry.UID < 0 || c.Entry.UID > MaxID || c.Entry.GID < 0 || c.Entry.GID > MaxID {
		return errdefs.Invalid("entry %s: uid and gid must be ids inside a container, 0 to %d", p, MaxID)
	}
	// setuid and setgid bits are dropped, as image layers' are: a volume is data.
	c.Entry.Mode &= 0o1777
	switch c.Entry.Type {
	case File:
		if !blobRE.MatchString(c.Entry.Blob) {
			return errdefs.Invalid("file %s: blob must be the SHA-256 of its content (64 hex digits)", p)
		}
	case Dir:
		c.Entry.Blob, c.Entry.Size = "", 0
	case Symlink:
		if c.Entry.Target == "" || strings.IndexByte(c.Entry.Target, 0) >= 0 {
			return errdefs.Invalid("symlink %s: target must be a path without NUL bytes", p)
		}
		c.Entry.Blob, c.Entry.Size = "", 0
	default:
		return errdefs.Invalid("entry %s: type must be %q, %q or %q, got %q", p, File, Dir, Symlink, c.Entry.Type)
	}
	return nil
}

// Apply applies changes in order; mtime stamps the directories it makes.
func (m *Manifest) Apply(changes []Change, mtime int64) {
	for _, c := range changes {
		if c.Op == OpDelete {
			m.Remove(c.Entry.Path)
		} else {
			m.Put(c.Entry, mtime)
		}
	}
}

// Copy copies srcs within m as cp does: into dst when dst is a directory (each under its own
// name), else the one source to dst. Directories need recursive.
func Copy(m *Manifest, srcs []string, dst string, recursive bool, mtime int64) error {
	d, dstExists := m.Get(dst)
	into := dstExists && d.Type == Dir
	if !into && len(srcs) > 1 {
		return errdefs.Invalid("copying %d paths needs dst_path to be an existing directory, and '%s' is not", len(srcs), dst)
	}
	for _, raw := range srcs {
		src, err := CleanPath(raw)
		if err != nil {
			return err
		}
		e, ok := m.Get(src)
		if !ok {
			return errdefs.NotFound("No such file or directory: '%s'", raw)
		}
		target := dst
		if into {
			target = path.Join(dst, path.Base(src))
		}
		if target == src || under(target, src) && e.Type == Dir {
			return errdefs.Invalid("cannot copy '%s' into itself", raw)
		}
		if e.Type == Dir && !recursive {
			return errdefs.Invalid("'%s' is a directory; pass recursive=True to copy it", raw)
		}
		var copies []Entry
		for _, x := range append([]Entry{e}, m.List(src, true)...) {
			x.Path = target + strings.TrimPrefix(x.Path, src)
			if src == "" {
				x.Path = path.Join(target, x.Path)
			}
			copies = append(copies, x)
		}
		for _, x := range copies {
			m.Put(x, mtime)
		}
	}
	return nil
}
