package sandbox

import "testing"

func TestCheckVolumeMounts(t *testing.T) {
	ok := func(path string) VolumeMount { return VolumeMount{Path: path, VolumeID: "vo-abc"} }
	for _, tc := range []struct {
		name string
		vs   []VolumeMount
		iso  string
		bad  bool
	}{
		{"one", []VolumeMount{ok("/data")}, IsolationRunc, false},
		{"cleaned", []VolumeMount{ok("/data/")}, IsolationRunc, false},
		{"two apart", []VolumeMount{ok("/a"), ok("/b")}, IsolationRunc, false},
		{"gvisor", []VolumeMount{ok("/data")}, IsolationGVisor, false},
		{"relative", []VolumeMount{ok("data")}, IsolationRunc, true},
		{"root", []VolumeMount{ok("/")}, IsolationRunc, true},
		{"reserved", []VolumeMount{ok("/proc/x")}, IsolationRunc, true},
		{"gust's", []VolumeMount{ok("/.gust/vol")}, IsolationRunc, true},
		{"nested", []VolumeMount{ok("/a"), ok("/a/b")}, IsolationRunc, true},
		{"same", []VolumeMount{ok("/a"), ok("/a")}, IsolationRunc, true},
		{"bad id", []VolumeMount{{Path: "/a", VolumeID: "di-abc"}}, IsolationRunc, true},
		{"sub_path climbs", []VolumeMount{{Path: "/a", VolumeID: "vo-abc", SubPath: "x/../../y"}}, IsolationRunc, true},
		{"none under gvisor", nil, IsolationGVisor, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckVolumeMounts(tc.vs, tc.iso)
			if (err != nil) != tc.bad {
				t.Errorf("err = %v, want error %v", err, tc.bad)
			}
		})
	}
	vs := []VolumeMount{{Path: "/data/", VolumeID: "vo-abc", SubPath: "/a/b/"}}
	if err := CheckVolumeMounts(vs, IsolationRunc); err != nil || vs[0].Path != "/data" || vs[0].SubPath != "a/b" {
		t.Errorf("cleaning: %v %+v", err, vs[0])
	}
}
