package volume

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// syncLog records what syncFile synced (files and directories), by path.
type syncLog struct {
	mu    sync.Mutex
	paths []string
}

func recordSyncs(t *testing.T) *syncLog {
	l := &syncLog{}
	old := syncFile
	syncFile = func(f *os.File) error {
		l.mu.Lock()
		l.paths = append(l.paths, f.Name())
		l.mu.Unlock()
		return old(f)
	}
	t.Cleanup(func() { syncFile = old })
	return l
}

func (l *syncLog) has(t *testing.T, what, p string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.paths {
		if q == p {
			return
		}
	}
	t.Errorf("%s: %s was not synced (synced: %v)", what, p, l.paths)
}

func (l *syncLog) hasPrefix(t *testing.T, what, prefix string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.paths {
		if strings.HasPrefix(q, prefix) {
			return
		}
	}
	t.Errorf("%s: nothing under %s was synced (synced: %v)", what, prefix, l.paths)
}

// TestBlobsDurable: storing a blob (an upload or a copy, a link of a layer's file, a manifest)
// syncs its data and the directories that name it before it returns.
func TestBlobsDurable(t *testing.T) {
	bl := &Blobs{Dir: filepath.Join(t.TempDir(), "blobs")}
	l := recordSyncs(t)
	sum, _, err := bl.Put(strings.NewReader("durable"), 100)
	if err != nil {
		t.Fatal(err)
	}
	l.hasPrefix(t, "Put", filepath.Join(bl.Dir, "put-"))
	l.has(t, "Put", filepath.Dir(bl.Path(sum)))
	l.has(t, "Put (a new fan-out directory)", bl.Dir)

	l = recordSyncs(t)
	src := filepath.Join(t.TempDir(), "layer-file")
	if err := os.WriteFile(src, []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lsum, _, err := bl.Hash(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := bl.Link(f, lsum); err != nil {
		t.Fatal(err)
	}
	l.has(t, "Link", src)
	l.has(t, "Link", filepath.Dir(bl.Path(lsum)))

	l = recordSyncs(t)
	m := NewManifest()
	m.Put(Entry{Path: "a", Type: File, Blob: lsum, Size: 6, Mode: 0o644}, 1)
	msum, err := bl.WriteManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	l.has(t, "WriteManifest", filepath.Dir(bl.Path(msum)))

	// A blob stored already (perhaps by a call still running) is synced too.
	l = recordSyncs(t)
	if _, _, err := bl.Put(strings.NewReader("durable"), 100); err != nil {
		t.Fatal(err)
	}
	l.has(t, "Put of a stored blob", bl.Path(sum))

	// An upload is synced by the commit that names it (Sync), with others at once.
	l = recordSyncs(t)
	up, _, err := bl.Upload(strings.NewReader("uploaded"), 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := bl.Sync([]string{up, sum}); err != nil {
		t.Fatal(err)
	}
	l.has(t, "Sync", bl.Path(up))
	l.has(t, "Sync", filepath.Dir(bl.Path(up)))
	l.has(t, "Sync", bl.Path(sum))
}

// TestBlobsSyncFS: a commit of many files links them unsynced between two syncs of the file
// system (SyncFS), which reach syncfs(2).
func TestBlobsSyncFS(t *testing.T) {
	bl := &Blobs{Dir: filepath.Join(t.TempDir(), "blobs")}
	l := recordSyncs(t)
	n := 0
	old := syncFS
	syncFS = func(d *os.File) error {
		if d.Name() != bl.Dir {
			t.Errorf("syncfs of %s, want the blob store %s", d.Name(), bl.Dir)
		}
		n++
		return old(d)
	}
	t.Cleanup(func() { syncFS = old })
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("many"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, _, err := bl.Hash(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := bl.SyncFS(); err != nil {
		t.Fatal(err)
	}
	if err := bl.LinkUnsynced(f, sum); err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Stat(sum); err != nil {
		t.Fatal(err)
	}
	for _, p := range l.paths {
		if p == src {
			t.Errorf("LinkUnsynced synced %s", src)
		}
	}
	if n != 1 {
		t.Errorf("SyncFS made %d syncfs calls, want 1", n)
	}
}
