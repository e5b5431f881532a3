package container

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Freeze stops every process of the container (its cgroup's freezer, v1 or v2) until thaw is
// called, waiting at most timeout for them to stop. A frozen container sees nothing of what
// happens meanwhile: the worker swaps its volumes' mounts under it (worker/volumes.go). On
// error the container runs (thawed).
func (c *Container) Freeze(timeout time.Duration) (thaw func() error, err error) {
	return FreezeCgroup(c.rt.cfg.cgroupsPath(c.ID), timeout)
}

// FreezeCgroup freezes the cgroup at path cg (as in a spec's cgroupsPath: "/gust/<id>").
func FreezeCgroup(cg string, timeout time.Duration) (thaw func() error, err error) {
	v1 := cgroupRoot + "/freezer" + cg + "/freezer.state"
	if _, err := os.Stat(v1); err == nil {
		thaw = func() error { return writeCgroupFile(v1, "THAWED") }
		return thaw, waitFrozen(thaw, timeout, func() error { return writeCgroupFile(v1, "FROZEN") }, func() (bool, error) {
			b, err := os.ReadFile(v1)
			return strings.TrimSpace(string(b)) == "FROZEN", err
		})
	}
	v2 := cgroupRoot + cg
	if _, err := os.Stat(v2 + "/cgroup.freeze"); err != nil {
		return nil, fmt.Errorf("freezing %s: no cgroup v1 freezer or v2 cgroup.freeze: %w", cg, err)
	}
	thaw = func() error { return writeCgroupFile(v2+"/cgroup.freeze", "0") }
	return thaw, waitFrozen(thaw, timeout, func() error { return writeCgroupFile(v2+"/cgroup.freeze", "1") }, func() (bool, error) {
		b, err := os.ReadFile(v2 + "/cgroup.events")
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "frozen 1" {
				return true, nil
			}
		}
		return false, nil
	})
}

// waitFrozen asks for the freeze and polls until frozen reports it; on failure it thaws.
func waitFrozen(thaw func() error, timeout time.Duration, freeze func() error, frozen func() (bool, error)) error {
	if err := freeze(); err != nil {
		return errors.Join(fmt.Errorf("freezing the container: %w", err), thaw())
	}
	deadline := time.Now().Add(timeout)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		ok, err := frozen()
		if err != nil {
			return errors.Join(fmt.Errorf("freezing the container: %w", err), thaw())
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("freezing the container: not frozen after %v", timeout), thaw())
		}
		time.Sleep(wait)
	}
}

func writeCgroupFile(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
