package containerinit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLookupUser(t *testing.T) {
	tests := []struct {
		spec     string
		uid, gid uint32
		home     string
		ok       bool
	}{
		{"root", 0, 0, "/root", true},
		{"0", 0, 0, "/root", true},
		{"root:0", 0, 0, "/root", true},
		{"no-such-user-here", 0, 0, "", false},
		{"root:no-such-group", 0, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			cred, home, err := lookupUser(tt.spec)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v", err)
			}
			if tt.ok && (cred.Uid != tt.uid || cred.Gid != tt.gid || home != tt.home) {
				t.Fatalf("got %+v %q", cred, home)
			}
		})
	}
	if env := withEnv([]string{"A=1", "HOME=/root"}, "HOME", "/home/x"); len(env) != 2 || env[1] != "HOME=/home/x" {
		t.Fatalf("withEnv: %v", env)
	}
}

// A malformed uid or gid in the image's user database must be refused: read as 0, it would
// run the image's "unprivileged" user as root.
func TestLookupUserRefusesMalformedIDs(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	for path, body := range map[string]string{
		passwd: "root:x:0:0:root:/root:/bin/sh\napp:x:1000x:1000:app:/home/app:/bin/sh\nother:x:1001:oops:o:/home/o:/bin/sh\nfine:x:1002:1002:f:/home/f:/bin/sh\n",
		group:  "root:x:0:\nbad:x:12a:\nfine:x:1002:\n",
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldP, oldG := passwdFile, groupFile
	passwdFile, groupFile = passwd, group
	t.Cleanup(func() { passwdFile, groupFile = oldP, oldG })
	for _, spec := range []string{"app", "other", "fine:bad"} {
		if cred, _, err := lookupUser(spec); err == nil {
			t.Errorf("%s: got uid %d gid %d, want an error", spec, cred.Uid, cred.Gid)
		}
	}
	if cred, home, err := lookupUser("fine"); err != nil || cred.Uid != 1002 || cred.Gid != 1002 || home != "/home/f" {
		t.Errorf("fine: %+v %q %v", cred, home, err)
	}
}
