package container

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// verdict is what the profile does with a system call whose first argument is arg0: the
// action of the first rule that matches, else the default. Rules here test arg0 only.
func verdict(p *specs.LinuxSeccomp, name string, arg0 uint64) (specs.LinuxSeccompAction, uint) {
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, name) {
			continue
		}
		match := true
		for _, a := range r.Args {
			switch a.Op {
			case specs.OpEqualTo:
				match = match && arg0 == a.Value
			case specs.OpNotEqual:
				match = match && arg0 != a.Value
			case specs.OpMaskedEqual:
				match = match && arg0&a.Value == a.ValueTwo
			default:
				panic("verdict: an operator the test does not know: " + string(a.Op))
			}
		}
		if match {
			errno := uint(0)
			if r.ErrnoRet != nil {
				errno = *r.ErrnoRet
			}
			return r.Action, errno
		}
	}
	return p.DefaultAction, *p.DefaultErrnoRet
}

func TestSeccompProfile(t *testing.T) {
	p := seccompProfile()
	if p.DefaultAction != specs.ActErrno || *p.DefaultErrnoRet != 1 {
		t.Fatalf("default %s %d, want an allowlist: ERRNO(EPERM)", p.DefaultAction, *p.DefaultErrnoRet)
	}
	const (
		afInet, afUnix, afVsock = 2, 1, 40
		cloneThread             = 0x3d0f00 // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
		cloneNewUser            = 0x10000000
		cloneNewNS              = 0x00020000
	)
	for _, tc := range []struct {
		name   string
		arg0   uint64
		action specs.LinuxSeccompAction
		errno  uint
	}{
		// What every program needs.
		{"read", 0, specs.ActAllow, 0},
		{"openat", 0, specs.ActAllow, 0},
		{"execve", 0, specs.ActAllow, 0},
		{"mmap", 0, specs.ActAllow, 0},
		{"futex", 0, specs.ActAllow, 0},
		{"epoll_pwait", 0, specs.ActAllow, 0},
		{"wait4", 0, specs.ActAllow, 0},
		{"pidfd_open", 0, specs.ActAllow, 0},
		{"setresuid", 0, specs.ActAllow, 0},  // su, apt's _apt sandbox
		{"chroot", 0, specs.ActAllow, 0},     // CAP_SYS_CHROOT is granted
		{"arch_prctl", 0, specs.ActAllow, 0}, // TLS on x86-64
		{"clone", cloneThread, specs.ActAllow, 0},
		{"clone", 0x11 /* SIGCHLD: fork */, specs.ActAllow, 0},
		{"socket", afInet, specs.ActAllow, 0},
		{"socket", afUnix, specs.ActAllow, 0},
		{"personality", 0xffffffff, specs.ActAllow, 0},
		{"clone3", 0, specs.ActErrno, 38}, // ENOSYS: libc falls back to clone
		// What the allowlist leaves out.
		{"io_uring_setup", 0, specs.ActErrno, 1},
		{"io_uring_enter", 0, specs.ActErrno, 1},
		{"io_uring_register", 0, specs.ActErrno, 1},
		{"socket", afVsock, specs.ActErrno, 1},
		{"clone", cloneThread | cloneNewUser, specs.ActErrno, 1},
		{"clone", 0x11 | cloneNewNS, specs.ActErrno, 1},
		{"kcmp", 0, specs.ActErrno, 1},
		{"pidfd_getfd", 0, specs.ActErrno, 1},
		{"modify_ldt", 0, specs.ActErrno, 1},
		{"ptrace", 0, specs.ActErrno, 1},
		{"mount", 0, specs.ActErrno, 1},
		{"unshare", 0, specs.ActErrno, 1},
		{"setns", 0, specs.ActErrno, 1},
		{"bpf", 0, specs.ActErrno, 1},
		{"keyctl", 0, specs.ActErrno, 1},
		{"userfaultfd", 0, specs.ActErrno, 1},
		{"open_by_handle_at", 0, specs.ActErrno, 1},
		{"init_module", 0, specs.ActErrno, 1},
		{"personality", 0x0040000 /* ADDR_NO_RANDOMIZE */, specs.ActErrno, 1},
	} {
		if action, errno := verdict(p, tc.name, tc.arg0); action != tc.action || errno != tc.errno {
			t.Errorf("%s(%#x): %s %d, want %s %d", tc.name, tc.arg0, action, errno, tc.action, tc.errno)
		}
	}
}

// The allowlist names each system call once, so that a rule added later for one (with
// arguments) is not shadowed by the list.
func TestSeccompAllowedUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range seccompAllowed {
		if seen[n] {
			t.Errorf("%s listed twice", n)
		}
		seen[n] = true
	}
	for _, n := range []string{"socket", "clone", "clone3", "personality"} {
		if seen[n] {
			t.Errorf("%s is in the plain allowlist; it has its own rule", n)
		}
	}
}
