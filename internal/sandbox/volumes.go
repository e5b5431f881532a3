package sandbox

import (
	"path"
	"regexp"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// VolumeMount is a volume shown inside a container at Path (Modal's volumes={path: vol}):
// the volume's version as of mount time, with the container's writes kept apart until a
// commit. SubPath mounts a directory of the volume instead of its root.
type VolumeMount struct {
	Path     string `json:"path"`
	VolumeID string `json:"volume_id"`
	ReadOnly bool   `json:"read_only,omitempty"`
	SubPath  string `json:"sub_path,omitempty"`
}

// MaxVolumeMounts bounds the volumes of one container.
const MaxVolumeMounts = 16

var volumeIDRE = regexp.MustCompile(`^vo-[A-Za-z0-9]{1,64}$`)

// reservedMountPaths are where a volume may not go: the system's own trees and gust's.
var reservedMountPaths = []string{"/proc", "/sys", "/dev", "/.gust", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/tmp"}

// CheckVolumeMounts validates a container's volume mounts, cleaning their paths.
func CheckVolumeMounts(vs []VolumeMount, isolation string) error {
	if len(vs) == 0 {
		return nil
	}
	if len(vs) > MaxVolumeMounts {
		return errdefs.Invalid("at most %d volumes may be mounted in one container, got %d", MaxVolumeMounts, len(vs))
	}
	seen := map[string]bool{}
	for i := range vs {
		v := &vs[i]
		if !path.IsAbs(v.Path) || strings.IndexByte(v.Path, 0) >= 0 {
			return errdefs.Invalid("volume mount path %q must be an absolute path", v.Path)
		}
		v.Path = path.Clean(v.Path)
		if v.Path == "/" {
			return errdefs.Invalid("a volume cannot be mounted at the root directory '/'")
		}
		for _, r := range reservedMountPaths {
			if v.Path == r || strings.HasPrefix(v.Path, r+"/") {
				return errdefs.Invalid("a volume cannot be mounted at %s: %s is the system's (mount it at a path such as /data)", v.Path, r)
			}
		}
		if !volumeIDRE.MatchString(v.VolumeID) {
			return errdefs.Invalid("volume mount %s: volume_id must be a volume's ID (vo-...), got %q", v.Path, v.VolumeID)
		}
		if strings.IndexByte(v.SubPath, 0) >= 0 || strings.Contains("/"+v.SubPath+"/", "/../") {
			return errdefs.Invalid("volume mount %s: sub_path %q may not climb out of the volume", v.Path, v.SubPath)
		}
		v.SubPath = strings.TrimPrefix(path.Clean("/"+v.SubPath), "/")
		for p := range seen {
			if p == v.Path || strings.HasPrefix(v.Path, p+"/") || strings.HasPrefix(p, v.Path+"/") {
				return errdefs.Invalid("volume mount paths %s and %s overlap; mount each volume at its own directory", p, v.Path)
			}
		}
		seen[v.Path] = true
	}
	return nil
}
