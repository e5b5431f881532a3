package containerinit

import "testing"

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
