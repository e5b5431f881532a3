package containerinit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The image's user database, as the container sees it (tests point these elsewhere).
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// lookupUser resolves "name", "uid", "name:group" or "uid:gid" against the container's own
// /etc/passwd and /etc/group (init runs inside the container, so these are the image's).
func lookupUser(spec string) (*syscall.Credential, string, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	uid, gid, home := -1, -1, ""
	if n, err := strconv.Atoi(userPart); err == nil {
		uid = n
	}
	for _, f := range readColonFile(passwdFile) {
		if len(f) < 6 {
			continue
		}
		if f[0] == userPart || (uid >= 0 && f[2] == strconv.Itoa(uid)) {
			// A malformed number must not read as 0: that is root.
			var err1, err2 error
			uid, err1 = strconv.Atoi(f[2])
			gid, err2 = strconv.Atoi(f[3])
			if err1 != nil || err2 != nil {
				return nil, "", fmt.Errorf("the image's /etc/passwd entry for %q has a bad uid or gid (%q, %q)", f[0], f[2], f[3])
			}
			home = f[5]
			break
		}
	}
	if uid < 0 {
		return nil, "", fmt.Errorf("user %q is not in the image's /etc/passwd", userPart)
	}
	if gid < 0 {
		gid = uid
	}
	if hasGroup {
		gid = -1
		if n, err := strconv.Atoi(groupPart); err == nil {
			gid = n
		}
		for _, f := range readColonFile(groupFile) {
			if len(f) >= 3 && f[0] == groupPart {
				n, err := strconv.Atoi(f[2])
				if err != nil {
					return nil, "", fmt.Errorf("the image's /etc/group entry for %q has a bad gid %q", f[0], f[2])
				}
				gid = n
			}
		}
		if gid < 0 {
			return nil, "", fmt.Errorf("group %q is not in the image's /etc/group", groupPart)
		}
	}
	var groups []uint32
	name := userPart
	for _, f := range readColonFile(groupFile) {
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				if g, err := strconv.Atoi(f[2]); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, home, nil
}

func readColonFile(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }() // read only
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// withEnv returns env with key set to value, replacing an existing entry.
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}
