package container

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestBuildSpec(t *testing.T) {
	cfg := &Config{StateDir: "/s", InitBinary: "/gust", PidsLimit: 1024, CgroupParent: "gust"}
	for _, tc := range []struct {
		name        string
		opts        CreateOptions
		nproc       bool
		netns       bool
		clone3Rule  bool
		cgroupMount bool
		quota       int64
		userns      bool
	}{
		{"runc sandbox", CreateOptions{ID: "sb-1", Isolation: IsolationRunc, CPU: 1, CPULimit: 1, MemoryMiB: 512}, false, true, true, true, 100000, true},
		{"runc function bursts", CreateOptions{ID: "sb-2", Isolation: IsolationRunc, CPU: 0.5, MemoryMiB: 512}, false, true, true, true, -1, true},
		{"runc build in the egress namespace", CreateOptions{ID: "sb-3", Isolation: IsolationRunc, CPU: 2, CPULimit: 2, MemoryMiB: 2048, NetNSPath: "/proc/1/fd/7", ExactIDs: true}, false, true, true, true, 200000, false},
		{"runc sandbox in the worker's namespace", CreateOptions{ID: "sb-5", Isolation: IsolationRunc, CPU: 1, CPULimit: 1, MemoryMiB: 512, NetNSPath: "/proc/1/fd/8"}, false, true, true, true, 100000, true},
		{"gvisor", CreateOptions{ID: "sb-4", Isolation: IsolationGVisor, CPU: 1, CPULimit: 1, MemoryMiB: 512}, true, true, false, false, 100000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := buildSpec(cfg, tc.opts, "/rootfs")
			if err != nil {
				t.Fatal(err)
			}
			hasNProc := len(s.Process.Rlimits) == 1 && s.Process.Rlimits[0].Type == "RLIMIT_NPROC" && s.Process.Rlimits[0].Hard == gvisorNProc
			if hasNProc != tc.nproc {
				t.Errorf("RLIMIT_NPROC set = %v, want %v", hasNProc, tc.nproc)
			}
			netns, cgroupNS, userNS := false, false, false
			for _, ns := range s.Linux.Namespaces {
				netns = netns || ns.Type == specs.NetworkNamespace
				if ns.Type == specs.NetworkNamespace && ns.Path != tc.opts.NetNSPath {
					t.Errorf("network namespace path %q, want %q", ns.Path, tc.opts.NetNSPath)
				}
				cgroupNS = cgroupNS || ns.Type == specs.CgroupNamespace
				userNS = userNS || ns.Type == specs.UserNamespace
			}
			// Root inside maps to the unprivileged host range, the same for uids and gids,
			// covering every id an image uses (nobody is 65534).
			want := []specs.LinuxIDMapping(nil)
			if tc.userns {
				want = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			}
			if userNS != tc.userns || !reflect.DeepEqual(s.Linux.UIDMappings, want) || !reflect.DeepEqual(s.Linux.GIDMappings, want) {
				t.Errorf("user namespace %v (want %v), uid map %v, gid map %v, want %v", userNS, tc.userns, s.Linux.UIDMappings, s.Linux.GIDMappings, want)
			}
			if netns != tc.netns || cgroupNS != tc.cgroupMount {
				t.Errorf("network namespace %v (want %v), cgroup namespace %v (want %v)", netns, tc.netns, cgroupNS, tc.cgroupMount)
			}
			// runc answers clone3 with ENOSYS (libc falls back to clone, whose flags seccomp
			// can check); gVisor answers it itself.
			clone3 := false
			for _, r := range s.Linux.Seccomp.Syscalls {
				clone3 = clone3 || len(r.Names) == 1 && r.Names[0] == "clone3" && r.Action == specs.ActErrno && *r.ErrnoRet == 38
			}
			if clone3 != tc.clone3Rule {
				t.Errorf("clone3 answered ENOSYS %v, want %v", clone3, tc.clone3Rule)
			}
			mounted := false
			for _, m := range s.Mounts {
				mounted = mounted || m.Destination == "/sys/fs/cgroup"
			}
			if mounted != tc.cgroupMount {
				t.Errorf("/sys/fs/cgroup mounted %v, want %v", mounted, tc.cgroupMount)
			}
			if q := *s.Linux.Resources.CPU.Quota; q != tc.quota {
				t.Errorf("cpu quota %d, want %d", q, tc.quota)
			}
			if *s.Linux.Resources.Memory.Limit != int64(tc.opts.MemoryMiB)<<20 || *s.Linux.Resources.Pids.Limit != 1024 {
				t.Errorf("memory %d, pids %d", *s.Linux.Resources.Memory.Limit, *s.Linux.Resources.Pids.Limit)
			}
		})
	}
}
