package volume

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func paths(m *Manifest) []string {
	var out []string
	for _, e := range m.Sorted() {
		out = append(out, string(e.Type[0])+":"+e.Path)
	}
	return out
}

const sum = "0000000000000000000000000000000000000000000000000000000000000000"

func file(p string) Change {
	return Change{Op: OpPut, Entry: Entry{Path: p, Type: File, Blob: sum, Mode: 0o644}}
}

func TestManifestApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes []Change
		want    []string
	}{
		{"parents made", []Change{file("a/b/c.txt")}, []string{"d:a", "d:a/b", "f:a/b/c.txt"}},
		{"delete subtree", []Change{file("a/b/c.txt"), file("a/d.txt"), {Op: OpDelete, Entry: Entry{Path: "a/b"}}}, []string{"d:a", "f:a/d.txt"}},
		{"file replaces dir", []Change{file("a/b/c.txt"), file("a/b")}, []string{"d:a", "f:a/b"}},
		{"dir under a file replaces it", []Change{file("a"), file("a/b")}, []string{"d:a", "f:a/b"}},
		{"last write wins", []Change{file("x"), {Op: OpPut, Entry: Entry{Path: "x", Type: File, Blob: strings.Repeat("1", 64)}}}, []string{"f:x"}},
		{"delete missing is no error", []Change{{Op: OpDelete, Entry: Entry{Path: "nope"}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManifest()
			m.Apply(tc.changes, 1)
			if got := paths(m); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestManifestEncodeRoundTrip(t *testing.T) {
	m := NewManifest()
	m.Apply([]Change{file("a/b.txt"), {Op: OpPut, Entry: Entry{Path: "l", Type: Symlink, Target: "a/b.txt"}}}, 5)
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := DecodeManifest(b)
	if err != nil || !reflect.DeepEqual(m.Entries, m2.Entries) {
		t.Fatalf("round trip: %v %v", err, m2.Entries)
	}
	if _, err := DecodeManifest([]byte("{")); err == nil {
		t.Error("a corrupt manifest decoded")
	}
}

func TestCleanPathAndCheck(t *testing.T) {
	for in, want := range map[string]string{"/a/b": "a/b", "a/b/": "a/b", "./a": "a", "/": "", "": "", "a//b": "a/b"} {
		if got, err := CleanPath(in); err != nil || got != want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"../x", "a/../../x", "a\x00b"} {
		if _, err := CleanPath(bad); err == nil {
			t.Errorf("CleanPath(%q) took it", bad)
		}
	}
	for _, c := range []Change{
		{Op: "move", Entry: Entry{Path: "a", Type: File, Blob: sum}},
		{Op: OpPut, Entry: Entry{Path: "a", Type: File, Blob: "abc"}},
		{Op: OpPut, Entry: Entry{Path: "a", Type: "fifo"}},
		{Op: OpPut, Entry: Entry{Path: "/", Type: Dir}},
		{Op: OpDelete, Entry: Entry{Path: "/"}},
		{Op: OpPut, Entry: Entry{Path: "l", Type: Symlink}},
	} {
		if err := c.Check(); err == nil {
			t.Errorf("Check took %+v", c)
		}
	}
}

func TestCopy(t *testing.T) {
	m := NewManifest()
	m.Apply([]Change{file("a/x"), file("a/y"), file("f"), {Op: OpPut, Entry: Entry{Path: "d", Type: Dir}}}, 1)
	if err := Copy(m, []string{"f"}, "g", false, 2); err != nil {
		t.Fatal(err)
	}
	if err := Copy(m, []string{"a", "f"}, "d", true, 2); err != nil {
		t.Fatal(err)
	}
	want := []string{"d:a", "f:a/x", "f:a/y", "d:d", "d:d/a", "f:d/a/x", "f:d/a/y", "f:d/f", "f:f", "f:g"}
	if got := paths(m); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, tc := range []struct {
		src []string
		dst string
		rec bool
	}{
		{[]string{"a"}, "z", false},            // a directory without recursive
		{[]string{"nope"}, "z", false},         // missing
		{[]string{"f", "g"}, "nowhere", false}, // several into a non-directory
		{[]string{"a"}, "a/sub", true},         // into itself
	} {
		if err := Copy(m, tc.src, tc.dst, tc.rec, 3); err == nil {
			t.Errorf("Copy(%v, %q) took it", tc.src, tc.dst)
		}
	}
}

// TestScanAndMaterialize: an upper layer as overlayfs leaves it (files, a whiteout, an opaque
// directory) becomes changes; applied, stored and materialized, the version holds the files.
func TestScanAndMaterialize(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("whiteouts and chown need root")
	}
	dir := t.TempDir()
	upper := filepath.Join(dir, "upper")
	os.MkdirAll(filepath.Join(upper, "d"), 0o755)
	os.MkdirAll(filepath.Join(upper, "o"), 0o755)
	os.WriteFile(filepath.Join(upper, "d", "f.txt"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(upper, "x.sh"), []byte("#!/bin/sh"), 0o755)
	if err := unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(upper, "o"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Skipf("no trusted xattrs here: %v", err)
	}
	found, next, err := Scan(upper, "sub", nil, IDs{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range found {
		got = append(got, string(f.Change.Op)+":"+f.Change.Entry.Path)
	}
	want := []string{"delete:sub/gone", "put:sub/d", "put:sub/d/f.txt", "delete:sub/o", "put:sub/o", "put:sub/x.sh"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	// Nothing changed: nothing to commit. A file removed from the layer is a delete.
	if again, _, _ := Scan(upper, "sub", next, IDs{}); len(again) != 0 {
		t.Errorf("a second scan found %d changes", len(again))
	}

	bl := &Blobs{Dir: filepath.Join(dir, "blobs")}
	m := NewManifest()
	var changes []Change
	for _, f := range found {
		if f.Source != "" {
			file, err := OpenBeneath(f.Root, f.Source)
			if err != nil {
				t.Fatal(err)
			}
			s, n, err := bl.PutFile(file)
			file.Close()
			if err != nil {
				t.Fatal(err)
			}
			f.Change.Entry.Blob, f.Change.Entry.Size = s, n
		}
		changes = append(changes, f.Change)
	}
	m.Apply(changes, 1)
	if m.Bytes() != int64(len("hello")+len("#!/bin/sh")) {
		t.Errorf("bytes %d", m.Bytes())
	}
	head, err := bl.WriteManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := bl.ReadManifest(head)
	if err != nil || bl.Missing(m2) != "" {
		t.Fatalf("read back: %v, missing %q", err, bl.Missing(m2))
	}
	vdir := filepath.Join(dir, "v")
	if err := bl.Materialize(m2, vdir, IDs{Base: 100000, Size: 65536}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(vdir, "sub", "d", "f.txt")); !bytes.Equal(b, []byte("hello")) {
		t.Errorf("materialized file: %q", b)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(vdir, "sub", "x.sh"), &st)
	if st.Mode&0o777 != 0o755 || st.Uid != 100000 {
		t.Errorf("x.sh mode %o uid %d, want 755 and 100000", st.Mode&0o777, st.Uid)
	}
	os.Remove(filepath.Join(upper, "x.sh"))
	if again, _, _ := Scan(upper, "sub", next, IDs{}); len(again) != 1 || again[0].Change.Op != OpDelete || again[0].Change.Entry.Path != "sub/x.sh" {
		t.Errorf("after a remove: %+v", again)
	}
	if _, _, err := bl.Put(strings.NewReader("too long"), 3); !IsTooLarge(err) {
		t.Errorf("a blob over the limit: %v", err)
	}
}

// TestPrune: blobs that no kept version names go once older than the grace; kept versions'
// manifests and files, and young blobs, stay.
func TestPrune(t *testing.T) {
	bl := &Blobs{Dir: filepath.Join(t.TempDir(), "blobs")}
	put := func(s string) string {
		sum, _, err := bl.Put(strings.NewReader(s), 100)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	kept, dropped := put("kept"), put("dropped")
	m := NewManifest()
	m.Put(Entry{Path: "k", Type: File, Blob: kept, Size: 4}, 1)
	head, err := bl.WriteManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := bl.Prune([]string{head}, time.Hour); err != nil || n != 0 {
		t.Fatalf("prune within the grace removed %d: %v", n, err)
	}
	n, freed, err := bl.Prune([]string{head, ""}, 0)
	if err != nil || n != 1 || freed != int64(len("dropped")) {
		t.Fatalf("prune: %d blobs, %d bytes, %v", n, freed, err)
	}
	for sum, want := range map[string]bool{kept: true, head: true, dropped: false} {
		if _, err := bl.Stat(sum); (err == nil) != want {
			t.Errorf("blob %s present %v, want %v", sum[:8], err == nil, want)
		}
	}
}

// TestOpenBeneath: a file reached through a symlink (the last step or one before it) or that
// is not a regular file is refused; a plain file below the root opens.
func TestOpenBeneath(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600)
	os.MkdirAll(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d", "f"), []byte("ok"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "link"))
	os.Symlink(outside, filepath.Join(root, "dirlink"))
	unix.Mkfifo(filepath.Join(root, "fifo"), 0o644)
	f, err := OpenBeneath(root, "d/f")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, rel := range []string{"link", "dirlink/secret", "fifo", "../" + filepath.Base(outside) + "/secret", "d"} {
		if f, err := OpenBeneath(root, rel); err == nil {
			f.Close()
			t.Errorf("OpenBeneath(%q) opened it", rel)
		}
	}
	// A scan reports the links as links, never what they point to.
	found, _, err := Scan(root, "", nil, IDs{})
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range found {
		if strings.Contains(fd.Change.Entry.Path, "secret") {
			t.Errorf("the scan went through a link: %+v", fd.Change)
		}
	}
}

// TestMaterializeRefusesEntriesUnderALink: a version whose file lies below a symlink (which
// no commit makes) is refused, not followed.
func TestMaterializeRefusesEntriesUnderALink(t *testing.T) {
	dir := t.TempDir()
	bl := &Blobs{Dir: filepath.Join(dir, "blobs")}
	sum, _, err := bl.Put(strings.NewReader("x"), 10)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManifest()
	m.Entries["a"] = Entry{Path: "a", Type: Symlink, Target: dir}
	m.Entries["a/x"] = Entry{Path: "a/x", Type: File, Blob: sum, Mode: 0o644}
	if err := bl.Materialize(m, filepath.Join(dir, "v"), IDs{Base: os.Getuid(), Size: 1}); err == nil {
		t.Fatal("materialized a file below a symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a file was made through the link")
	}
	c := Change{Op: OpPut, Entry: Entry{Path: "s", Type: File, Blob: sum, Mode: 0o4755}}
	if err := c.Check(); err != nil || c.Entry.Mode != 0o755 {
		t.Errorf("setuid kept: %o %v", c.Entry.Mode, err)
	}
}
