package integration

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The escape suite: attack programs run inside sandboxes under both runtimes, and each must be
// blocked. Every case asserts how it was blocked, not only that it failed.

var isolations = []string{"runc", "gvisor"}

func forEachIsolation(t *testing.T, fields map[string]any, f func(t *testing.T, iso, id string)) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			all := map[string]any{"isolation": iso}
			for k, v := range fields {
				all[k] = v
			}
			f(t, iso, createRaw(t, all))
		})
	}
}

func py(code string) []string { return []string{"python3", "-c", code} }

func TestEscapeReadHostFile(t *testing.T) {
	needGust(t)
	secret := fmt.Sprintf("secret-%d", time.Now().UnixNano())
	marker := fmt.Sprintf("/tmp/gust-marker-%d", time.Now().UnixNano())
	if err := os.WriteFile(marker, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(marker)
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		out, _, _ := execRaw(t, id, "sh", "-c", "cat "+marker+" /proc/1/root"+marker+" 2>&1; grep -r "+secret+" /tmp /proc/1/root/tmp 2>/dev/null; echo done")
		if strings.Contains(out, secret) {
			t.Fatalf("sandbox read the host marker file: %q", out)
		}
		if !strings.Contains(out, "No such file or directory") {
			t.Fatalf("expected the host path not to exist in the sandbox's mount namespace, got %q", out)
		}
	})
}

func TestEscapeSeeHostProcesses(t *testing.T) {
	needGust(t)
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		out, _, code := execRaw(t, id, "sh", "-c", "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done")
		if code != 0 {
			t.Fatalf("listing /proc failed: %d", code)
		}
		if strings.Contains(out, "gust up") || strings.Contains(out, gust.bin+" up") || strings.Contains(out, "go test") {
			t.Fatalf("sandbox sees host processes:\n%s", out)
		}
		n := strings.Count(strings.TrimSpace(out), "\n") + 1
		if n > 10 {
			t.Fatalf("sandbox sees %d processes; its pid namespace should hold only its own:\n%s", n, out)
		}
		pid1, _, _ := execRaw(t, id, "cat", "/proc/1/cmdline")
		if !strings.Contains(pid1, "container-init") {
			t.Fatalf("PID 1 in the sandbox should be gust-init, got %q", pid1)
		}
	})
}

func TestEscapeMountAndUnshare(t *testing.T) {
	needGust(t)
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		out, errOut, code := execRaw(t, id, py(`
import ctypes, os
os.makedirs("/tmp/m", exist_ok=True)
libc = ctypes.CDLL(None, use_errno=True)
print(libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None), ctypes.get_errno())`)...)
		if code != 0 || strings.TrimSpace(out) != "-1 1" { // EPERM
			t.Fatalf("mount should fail with EPERM, got %q %q", out, errOut)
		}
		_, errOut, code = execRaw(t, id, "unshare", "--user", "--map-root-user", "--mount", "true")
		if code == 0 {
			t.Fatal("unshare of user+mount namespaces succeeded inside the sandbox")
		}
		if !strings.Contains(errOut, "Operation not permitted") && !strings.Contains(errOut, "Function not implemented") {
			t.Fatalf("unshare failed for an unexpected reason: %q", errOut)
		}
	})
}

func TestEscapeKernelModule(t *testing.T) {
	needGust(t)
	code := `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/null", os.O_RDONLY)
r = libc.syscall(313, fd, b"", 0)  # finit_module
print(r, ctypes.get_errno())
r = libc.syscall(175, b"\0"*64, 64, b"")  # init_module
print(r, ctypes.get_errno())
`
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		out, errOut, c := execRaw(t, id, py(code)...)
		if c != 0 {
			t.Fatalf("probe failed: %d %s", c, errOut)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 || f[0] != "-1" {
				t.Fatalf("module syscall did not fail: %q", out)
			}
			if errno, _ := strconv.Atoi(f[1]); errno != 1 && errno != 38 { // EPERM or ENOSYS
				t.Fatalf("module syscall failed with errno %d, want EPERM (seccomp/capabilities) or ENOSYS (gVisor)", errno)
			}
		}
	})
}

func TestEscapeWriteProcSys(t *testing.T) {
	needGust(t)
	hostBefore, _ := os.ReadFile("/proc/sys/kernel/hostname")
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		if iso == "gvisor" {
			// gVisor serves its own /proc and /sys from its kernel: writes there, allowed or
			// not, never reach the host. The host check below covers it.
			execRaw(t, id, "sh", "-c", "echo pwned > /proc/sys/kernel/hostname; echo 1 > /proc/sysrq-trigger; true")
			return
		}
		for _, target := range []string{"/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/sys/kernel/mm/transparent_hugepage/enabled", "/proc/sysrq-trigger"} {
			_, errOut, code := execRaw(t, id, "sh", "-c", "echo 1 > "+target)
			if code == 0 {
				t.Fatalf("write to %s succeeded", target)
			}
			// Read-only mounts (runc), or gVisor's own /proc and /sys, which do not reach the host.
			if !strings.Contains(errOut, "Read-only file system") && !strings.Contains(errOut, "Permission denied") &&
				!strings.Contains(errOut, "nonexistent") && !strings.Contains(errOut, "No such file") && !(iso == "gvisor" && strings.Contains(errOut, "I/O error")) {
				t.Fatalf("write to %s failed for an unexpected reason: %q", target, errOut)
			}
		}
	})
	// The host's values are unchanged.
	if b, _ := os.ReadFile("/proc/sys/kernel/hostname"); string(b) != string(hostBefore) {
		t.Fatalf("host hostname was changed to %q", b)
	}
}

func TestEscapeReachGustAPI(t *testing.T) {
	needGust(t)
	u, _ := url.Parse(gust.url)
	port := u.Port()
	code := fmt.Sprintf(`
import socket
for host in ("127.0.0.1", "10.0.2.2", "172.17.0.1", "169.254.169.254"):
    try:
        socket.create_connection((host, %s), timeout=2)
        print("CONNECTED", host)
    except OSError as e:
        print("blocked", host, type(e).__name__, e.errno)
`, port)
	for _, block := range []bool{false, true} {
		t.Run(fmt.Sprintf("block_network=%v", block), func(t *testing.T) {
			forEachIsolation(t, map[string]any{"block_network": block}, func(t *testing.T, iso, id string) {
				out, errOut, c := execRaw(t, id, py(code)...)
				if c != 0 {
					t.Fatalf("probe failed: %s", errOut)
				}
				if strings.Contains(out, "CONNECTED") {
					t.Fatalf("sandbox reached the gust API:\n%s", out)
				}
				if !strings.Contains(out, "blocked 127.0.0.1 ConnectionRefusedError") {
					t.Fatalf("loopback should be the sandbox's own (connection refused), got:\n%s", out)
				}
			})
		})
	}
}

func TestEscapeRawSocketsAndBlockedNetwork(t *testing.T) {
	needGust(t)
	code := `
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("RAW OK")
except OSError as e:
    print("raw blocked", e.errno)
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    print("PACKET OK")
except (OSError, AttributeError) as e:
    print("packet blocked")
import os
print("ifaces", sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else "none")
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    print("NET OK")
except OSError as e:
    print("net blocked", e.errno)
`
	forEachIsolation(t, map[string]any{"block_network": true}, func(t *testing.T, iso, id string) {
		out, errOut, c := execRaw(t, id, py(code)...)
		if c != 0 {
			t.Fatalf("probe failed: %s", errOut)
		}
		if strings.Contains(out, "RAW OK") || strings.Contains(out, "PACKET OK") || strings.Contains(out, "NET OK") {
			t.Fatalf("network escape:\n%s", out)
		}
		// EPERM (no CAP_NET_RAW) / EACCES; ENETUNREACH (101) with only lo.
		if !strings.Contains(out, "raw blocked 1") && !strings.Contains(out, "raw blocked 13") {
			t.Fatalf("raw socket should fail with EPERM or EACCES:\n%s", out)
		}
		if !strings.Contains(out, "net blocked 101") && !strings.Contains(out, "net blocked 113") {
			t.Fatalf("outside address should be unreachable (ENETUNREACH or EHOSTUNREACH):\n%s", out)
		}
		if iso == "runc" && !strings.Contains(out, "ifaces ['lo']") {
			t.Fatalf("a blocked sandbox should have only lo:\n%s", out)
		}
	})
}

// TestEscapeForkBomb: a fork bomb's forks fail cleanly (EAGAIN) under both runtimes, the host
// stays responsive, and the sandbox lives on: once the bomb's processes exit it answers exec.
// Under gVisor the limit is RLIMIT_NPROC inside the sandbox (the host pids limit would kill
// the sentry itself); under runc it is the pids cgroup.
func TestEscapeForkBomb(t *testing.T) {
	needGust(t)
	code := `
import os, time
n = 0
try:
    while n < 100000:
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError as e:
    print("stopped", n, e.errno)
`
	// Memory enough for a thousand forked Pythons, whose pages grow apart as they run: what
	// must stop the bomb is the pids limit. With the default 1 GiB a busy machine's bomb now
	// and then reached the memory limit first and the sandbox was killed (exit 137), which
	// is TestEscapeMemoryBomb's case, not this one's.
	forEachIsolation(t, map[string]any{"memory": 4096}, func(t *testing.T, iso, id string) {
		done := make(chan struct{})
		var worst time.Duration
		go func() {
			defer close(done)
			for i := 0; i < 20; i++ {
				start := time.Now()
				exec.Command("true").Run()
				worst = max(worst, time.Since(start))
				time.Sleep(100 * time.Millisecond)
			}
		}()
		out, errOut, code := execRaw(t, id, py(code)...)
		<-done
		if worst > 2*time.Second {
			t.Fatalf("host became unresponsive: a host command took %v", worst)
		}
		if !strings.Contains(out, "stopped") {
			t.Fatalf("the fork bomb was not stopped cleanly (exit %d): %q %q", code, out, errOut)
		}
		var n, errno int
		fmt.Sscanf(strings.TrimSpace(out), "stopped %d %d", &n, &errno)
		limit := 1100 // the pids limit of 1024
		if iso == "gvisor" {
			limit = 300 // RLIMIT_NPROC of 256
		}
		if n > limit || errno != 11 {
			t.Fatalf("fork bomb stopped after %d forks with errno %d; want at most %d and EAGAIN", n, errno, limit)
		}
		time.Sleep(4 * time.Second) // the bomb's children sleep 3 s, then exit
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _, code := execRaw(t, id, "echo", "alive")
			if code == 0 && strings.Contains(out, "alive") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sandbox did not answer exec after the bomb: exit %d %q", code, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

func TestEscapeMemoryBomb(t *testing.T) {
	needGust(t)
	code := `
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
`
	forEachIsolation(t, map[string]any{"memory": 128}, func(t *testing.T, iso, id string) {
		line := execExit(t, id, py(code)...)
		if line.ExitCode != 137 {
			t.Fatalf("memory bomb exit code %d, want 137 (SIGKILL)", line.ExitCode)
		}
		if !strings.Contains(line.Error, "out of memory") {
			t.Fatalf("exit reason should say out of memory, got %q", line.Error)
		}
	})
}

func TestEscapeFillDisk(t *testing.T) {
	needGust(t)
	forEachIsolation(t, map[string]any{"memory": 2048}, func(t *testing.T, iso, id string) {
		_, errOut, code := execRaw(t, id, "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=4096")
		if code == 0 {
			t.Fatal("writing 4 GiB succeeded; the sandbox disk should be bounded")
		}
		if !strings.Contains(errOut, "No space left on device") {
			t.Fatalf("dd failed for an unexpected reason: %q", errOut)
		}
		out, _, code := execRaw(t, id, "sh", "-c", "rm /fill && echo still-alive")
		if code != 0 || out != "still-alive\n" {
			t.Fatalf("sandbox unusable after filling its disk: %q", out)
		}
	})
}

func TestEscapeRmRfRoot(t *testing.T) {
	needGust(t)
	forEachIsolation(t, nil, func(t *testing.T, iso, victim string) {
		other := createRaw(t, map[string]any{"isolation": iso})
		execRaw(t, victim, "rm", "-rf", "/", "--no-preserve-root")
		if _, _, code := execRaw(t, victim, "test", "-x", "/usr/bin/python3"); code == 0 {
			t.Fatal("rm -rf / left python3 in the victim sandbox: the attack did not run")
		}
		out, _, code := execRaw(t, other, "sh", "-c", "test -x /usr/bin/python3 && echo ok")
		if code != 0 || !strings.Contains(out, "ok") {
			t.Fatalf("another sandbox was harmed: %q %d", out, code)
		}
		fresh := createRaw(t, map[string]any{"isolation": iso})
		out, _, code = execRaw(t, fresh, "python3", "-c", "print('image intact')")
		if code != 0 || out != "image intact\n" {
			t.Fatalf("the image was harmed: %q %d", out, code)
		}
		if _, err := os.Stat(gust.bin); err != nil {
			t.Fatalf("the gust binary (bind-mounted read-only into sandboxes) was harmed: %v", err)
		}
	})
}

func TestEscapeSetuid(t *testing.T) {
	needGust(t)
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		script := "cp $(readlink -f /usr/bin/python3) /tmp/suid-python && chmod 4755 /tmp/suid-python && " +
			"setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/suid-python -c 'import os; print(os.getuid(), os.geteuid())'"
		out, errOut, code := execRaw(t, id, "sh", "-c", script)
		if code != 0 {
			t.Fatalf("probe failed: %q %q", out, errOut)
		}
		if strings.TrimSpace(out) != "65534 65534" {
			t.Fatalf("setuid binary raised privileges: uid/euid = %q (no_new_privs should keep 65534)", out)
		}
	})
}

// TestEscapeRootIsNotHostRoot: root in a runc sandbox is an unprivileged user on the host
// (a user namespace maps it to the host range from 100000), while the image's files keep
// their owners inside. Read from the host side: the host's /proc of a process started in the
// sandbox.
func TestEscapeRootIsNotHostRoot(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{"isolation": "runc"})
	out, errOut, code := execRaw(t, id, "sh", "-c", "id -u; stat -c '%u:%g' / /usr /usr/bin/python3 /etc/shadow; cat /proc/self/uid_map")
	f := strings.Fields(out)
	if code != 0 || len(f) < 8 {
		t.Fatalf("probe failed: %q %q", out, errOut)
	}
	if f[0] != "0" || f[1] != "0:0" || f[2] != "0:0" || f[3] != "0:0" || f[4] != "0:42" { // shadow is root:shadow
		t.Fatalf("inside the sandbox root should be 0 and the image's files keep their owners, got %q", out)
	}
	if f[5] != "0" || f[6] != "100000" || f[7] != "65536" {
		t.Fatalf("uid_map %q, want 0 100000 65536", f[5:])
	}
	marker := fmt.Sprintf("gust-userns-probe-%d", time.Now().UnixNano())
	if _, errOut, code := execRaw(t, id, "sh", "-c", "setsid python3 -c 'import time; time.sleep(60)' "+marker+" >/dev/null 2>&1 &"); code != 0 {
		t.Fatalf("starting the probe process: %q", errOut)
	}
	var status string
	for deadline := time.Now().Add(10 * time.Second); status == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			cmdline, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(cmdline), marker) {
				continue
			}
			b, _ := os.ReadFile("/proc/" + d.Name() + "/status")
			status = string(b)
		}
	}
	if status == "" {
		t.Fatal("the sandbox's probe process was not found in the host's /proc")
	}
	for _, line := range strings.Split(status, "\n") {
		for _, key := range []string{"Uid:", "Gid:"} {
			if rest, ok := strings.CutPrefix(line, key); ok {
				if ids := strings.Fields(rest); len(ids) != 4 || ids[0] != "100000" || ids[1] != "100000" || ids[2] != "100000" || ids[3] != "100000" {
					t.Fatalf("root in the sandbox is %s %v on the host, want 100000 (unprivileged)", key, ids)
				}
			}
		}
	}
	if !strings.Contains(status, "Uid:\t100000") {
		t.Fatalf("no Uid line in the probe's host status:\n%s", status)
	}
	execRaw(t, id, "pkill", "-f", marker)
}

// TestEscapeIOUring: io_uring, a large kernel surface with a record of privilege escalations,
// is refused under both runtimes: EPERM from the seccomp allowlist (runc; gVisor applies the
// same profile inside), or ENOSYS where gVisor's kernel has no io_uring.
func TestEscapeIOUring(t *testing.T) {
	needGust(t)
	code := `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
print(libc.syscall(425, 8, params), ctypes.get_errno())  # io_uring_setup
`
	forEachIsolation(t, nil, func(t *testing.T, iso, id string) {
		out, errOut, c := execRaw(t, id, py(code)...)
		if c != 0 {
			t.Fatalf("probe failed: %d %s", c, errOut)
		}
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != "-1" {
			t.Fatalf("io_uring_setup did not fail: %q", out)
		}
		if f[1] != "1" && f[1] != "38" {
			t.Fatalf("io_uring_setup failed with errno %s, want EPERM (seccomp) or ENOSYS (gVisor)", f[1])
		}
	})
}

// TestEscapeSeccompAllowlist: system calls outside Docker's default allowlist fail with the
// profile's EPERM under runc, where a kernel answer would differ: kcmp and pidfd_getfd (which
// compare and steal other processes' descriptors; the kernel would allow them on one's own
// children) and AF_VSOCK sockets (to the hypervisor; the kernel answers EAFNOSUPPORT or makes
// one).
func TestEscapeSeccompAllowlist(t *testing.T) {
	needGust(t)
	code := `
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
pid = os.getpid()
print("kcmp", libc.syscall(312, pid, pid, 0, 0, 0), ctypes.get_errno())  # KCMP_FILE of fd 0 with itself
pidfd = libc.syscall(434, pid, 0)  # pidfd_open
print("pidfd_getfd", libc.syscall(438, pidfd, 0, 0), ctypes.get_errno())
try:
    socket.socket(40, socket.SOCK_STREAM)
    print("vsock OK")
except OSError as e:
    print("vsock", -1, e.errno)
`
	id := createRaw(t, map[string]any{"isolation": "runc"})
	out, errOut, c := execRaw(t, id, py(code)...)
	if c != 0 {
		t.Fatalf("probe failed: %d %s", c, errOut)
	}
	for _, want := range []string{"kcmp -1 1", "pidfd_getfd -1 1", "vsock -1 1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("want %q (refused with the profile's EPERM), got:\n%s", want, out)
		}
	}
}

// TestEscapeHostNICNames: a runc sandbox on the worker's network sees the host's /sys (it
// cannot mount its own there), but not the machine's network interfaces: /sys/class/net,
// /sys/devices/virtual/net and each physical NIC's net directory are masked.
func TestEscapeHostNICNames(t *testing.T) {
	needGust(t)
	links, _ := filepath.Glob("/sys/class/net/*")
	dirs := []string{"/sys/class/net", "/sys/devices/virtual/net"}
	for _, l := range links {
		if dev, err := filepath.EvalSymlinks(l); err == nil && !strings.HasPrefix(dev, "/sys/devices/virtual/") {
			dirs = append(dirs, filepath.Dir(dev))
		}
	}
	id := createRaw(t, map[string]any{"isolation": "runc"})
	out, errOut, code := execRaw(t, id, append([]string{"python3", "-c", `
import os, sys
for d in sys.argv[1:]:
    print(d, sorted(os.listdir(d)) if os.path.isdir(d) else "none")
`}, dirs...)...)
	if code != 0 {
		t.Fatalf("listing: %s %s", out, errOut)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(line, " []") && !strings.HasSuffix(line, " none") {
			t.Errorf("the sandbox sees the machine's interfaces: %s", line)
		}
	}
	t.Logf("%s", out)
}
