package network

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
)

// The containers' resolv.conf lives in RunDir/net-<tag> (Config.ResolvDir's default): Close
// removes it, and New removes those of workers that were killed and never restarted, whose
// bridge is gone (a running worker's bridge exists as long as it runs).

// removeResolvDir removes the manager's resolv.conf and its directory, if nothing else is in
// it.
func (m *Manager) removeResolvDir() {
	if err := os.Remove(filepath.Join(m.cfg.ResolvDir, "resolv.conf")); err != nil && !os.IsNotExist(err) {
		m.cfg.Logf("network: %v", err)
	}
	if err := os.Remove(m.cfg.ResolvDir); err != nil && !os.IsNotExist(err) {
		m.cfg.Logf("network: %v", err)
	}
}

// sweepResolvDirs removes RunDir/net-<tag> directories of other tags whose bridge gb<tag> does
// not exist.
func (m *Manager) sweepResolvDirs() {
	dirs, _ := filepath.Glob(filepath.Join(m.cfg.RunDir, "net-*"))
	for _, d := range dirs {
		tag := strings.TrimPrefix(filepath.Base(d), "net-")
		if tag == m.cfg.Tag || tag == "" || len(tag) > 8 {
			continue
		}
		if _, err := netlink.LinkByName("gb" + tag); err == nil {
			continue // its worker runs, or was killed and its successor will reuse it
		}
		_ = os.Remove(filepath.Join(d, "resolv.conf"))
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			m.cfg.Logf("network: removing a stopped worker's %s: %v", d, err)
		}
	}
}
