package volume

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwnersKept: a scan reads owners as a container sees them (host ids mapped back, others
// as root), and a materialized version gives each path its owner, never changing the owner of
// a blob that another path links (same content, another owner: a copy).
func TestOwnersKept(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	ids := IDs{Base: 100000, Size: 65536}
	dir := t.TempDir()
	upper := filepath.Join(dir, "upper")
	write := func(p, data string, uid, gid int) {
		t.Helper()
		p = filepath.Join(upper, p)
		mk := filepath.Dir(p)
		if data == "" {
			mk = p
		}
		if err := os.MkdirAll(mk, 0o755); err != nil {
			t.Fatal(err)
		}
		if data != "" {
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", "same", 101234, 102345)
	write("d/", "", 101000, 101000)
	write("d/b.txt", "root's", 100000, 100000)
	write("c.txt", "same", 100000, 100000)
	write("host.txt", "odd", 5, 5)
	found, _, err := Scan(upper, "", nil, ids)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{"a.txt": {1234, 2345}, "d": {1000, 1000}, "d/b.txt": {0, 0}, "c.txt": {0, 0}, "host.txt": {0, 0}}
	bl := &Blobs{Dir: filepath.Join(dir, "blobs")}
	m := NewManifest()
	for _, f := range found {
		e := f.Change.Entry
		if w, ok := want[e.Path]; !ok || e.UID != w[0] || e.GID != w[1] {
			t.Errorf("scan: %s owned by %d:%d, want %v", e.Path, e.UID, e.GID, w)
		}
		if f.Source != "" {
			file, err := OpenBeneath(f.Root, f.Source)
			if err != nil {
				t.Fatal(err)
			}
			if e.Blob, e.Size, err = bl.Hash(file); err != nil {
				t.Fatal(err)
			}
			if err := bl.Link(file, e.Blob); err != nil {
				t.Fatal(err)
			}
			file.Close()
		}
		c := Change{Op: OpPut, Entry: e}
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		m.Apply([]Change{c}, 1)
	}
	v := filepath.Join(dir, "v")
	if err := bl.Materialize(m, v, ids); err != nil {
		t.Fatal(err)
	}
	for p, w := range want {
		fi, err := os.Lstat(filepath.Join(v, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != ids.Host(w[0]) || int(st.Gid) != ids.Host(w[1]) {
			t.Errorf("materialized %s owned by %d:%d on the host, want %d:%d", p, st.Uid, st.Gid, ids.Host(w[0]), ids.Host(w[1]))
		}
	}
	bad := Change{Op: OpPut, Entry: Entry{Path: "x", Type: Dir, UID: MaxID + 1}}
	if err := bad.Check(); err == nil {
		t.Errorf("a uid above %d was accepted", MaxID)
	}
}
