package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"regexp"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// More kinds: an image made of build steps over a base, and OCI images.
const (
	KindBuilt      = "built"
	KindScratch    = "scratch"
	KindRegistry   = "registry"
	KindOCIArchive = "oci_archive"
)

// Step is one build step of Modal's chainable Image API. Steps that run commands become a
// layer each; env and workdir change only the image's defaults.
type Step struct {
	Type          string            `json:"type"` // run_commands, apt_install, pip_install, env, workdir
	Commands      []string          `json:"commands,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Path          string            `json:"path,omitempty"`
	Packages      []string          `json:"packages,omitempty"`
	IndexURL      string            `json:"index_url,omitempty"`
	ExtraIndexURL string            `json:"extra_index_url,omitempty"`
	FindLinks     string            `json:"find_links,omitempty"`
	Pre           bool              `json:"pre,omitempty"`
	// uv_pip_install: requirements files already in the image (absolute paths), and Modal's
	// extra_options, passed to the installer as they are (shell words, like run_commands).
	Requirements []string `json:"requirements,omitempty"`
	ExtraOptions string   `json:"extra_options,omitempty"`
	// add_local: an uploaded tar (POST /v1/blobs) placed at Remote. With Copy false it is
	// Modal's mount-at-start: it must come after every step that runs commands.
	User   string `json:"user,omitempty"` // user: who later steps and sandboxes run as
	Blob   string `json:"blob,omitempty"`
	Remote string `json:"remote,omitempty"`
	Copy   bool   `json:"copy,omitempty"`
}

var (
	pkgRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_:=<>!~,\-\[\]]*$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks a step; i is its position, for messages.
func (s Step) Validate(i int) error {
	if err := s.checkNUL(i); err != nil {
		return err
	}
	switch s.Type {
	case "run_commands":
		if len(s.Commands) == 0 {
			return errdefs.Invalid("step %d (run_commands) has no commands", i)
		}
	case "apt_install", "pip_install", "uv_pip_install":
		if len(s.Packages) == 0 && (s.Type != "uv_pip_install" || len(s.Requirements) == 0) {
			return errdefs.Invalid("step %d (%s) names no packages", i, s.Type)
		}
		for _, p := range s.Packages {
			if !pkgRE.MatchString(p) {
				return errdefs.Invalid("step %d (%s): %q is not a package name", i, s.Type, p)
			}
		}
		for _, r := range s.Requirements {
			if !path.IsAbs(r) {
				return errdefs.Invalid("step %d (%s): requirements file %q must be an absolute path in the image", i, s.Type, r)
			}
		}
	case "entrypoint":
	case "user":
		if s.User == "" || strings.ContainsAny(s.User, " \t\n/") {
			return errdefs.Invalid("step %d (user): %q is not a user name or uid", i, s.User)
		}
	case "env":
		if len(s.Env) == 0 {
			return errdefs.Invalid("step %d (env) sets no variables", i)
		}
	case "workdir":
		if !path.IsAbs(s.Path) {
			return errdefs.Invalid("step %d (workdir): %q must be an absolute path", i, s.Path)
		}
	case "add_local":
		if !blobRE.MatchString(s.Blob) {
			return errdefs.Invalid("step %d (add_local): blob must be the sha256 that POST /v1/blobs returned", i)
		}
		if !path.IsAbs(s.Remote) {
			return errdefs.Invalid("step %d (add_local): remote path %q must be absolute", i, s.Remote)
		}
	default:
		return errdefs.Invalid("step %d: unknown step type %q; gust builds run_commands, apt_install, pip_install, uv_pip_install, env, workdir, user, entrypoint and add_local", i, s.Type)
	}
	for k := range s.Env {
		if !envKeyRE.MatchString(k) {
			return errdefs.Invalid("step %d: env key %q is not a valid variable name", i, k)
		}
	}
	return nil
}

// checkNUL refuses a NUL byte in any text of a step: paths, users, commands, package indexes,
// env. None can hold one (the kernel and the shell end a string there), so a step with one
// would build something else than it says.
func (s Step) checkNUL(i int) error {
	texts := append([]string{s.Path, s.Remote, s.User, s.IndexURL, s.ExtraIndexURL, s.FindLinks, s.ExtraOptions}, s.Commands...)
	texts = append(append(texts, s.Packages...), s.Requirements...)
	for k, v := range s.Env {
		texts = append(texts, k, v)
	}
	for _, t := range texts {
		if strings.IndexByte(t, 0) >= 0 {
			return errdefs.Invalid("step %d (%s) contains a NUL byte in %q", i, s.Type, t)
		}
	}
	return nil
}

// MakesLayer reports whether the step runs commands (and so becomes a layer).
func (s Step) MakesLayer() bool {
	return s.Type != "env" && s.Type != "workdir" && s.Type != "entrypoint"
}

// Describe names the step in logs and errors, e.g. `run_commands("make")`.
func (s Step) Describe() string {
	switch s.Type {
	case "run_commands":
		return "run_commands(" + quoteAll(s.Commands) + ")"
	case "apt_install", "pip_install", "uv_pip_install":
		return s.Type + "(" + quoteAll(append(append([]string(nil), s.Packages...), s.Requirements...)) + ")"
	case "workdir":
		return "workdir(" + shellQuote(s.Path) + ")"
	case "add_local":
		return "add_local(" + shellQuote(s.Remote) + ")"
	}
	return s.Type + "(...)"
}

// ShellCommands returns the shell commands that carry the step out in a build container.
func (s Step) ShellCommands() []string {
	switch s.Type {
	case "apt_install":
		return []string{"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " +
			quoteAll(s.Packages) + " && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"}
	case "pip_install":
		// Debian marks its Python externally managed; an image is the place to install anyway.
		return []string{"python -m pip install --no-cache-dir --break-system-packages" + s.installArgs()}
	case "uv_pip_install":
		// Modal's images have uv; gust's (Debian's python3 and pip) need not. With uv in the
		// image it installs, else pip does, and the build log says which.
		args := s.installArgs()
		return []string{"if command -v uv >/dev/null 2>&1; then uv pip install --system --break-system-packages" + args +
			"; else echo 'gust: uv is not in the image: uv_pip_install installs with pip instead' && " +
			"python -m pip install --no-cache-dir --break-system-packages" + args + "; fi"}
	}
	return s.Commands
}

// installArgs are the arguments pip and uv pip share: indexes, --pre, requirements files,
// extra options and the packages, each after a space.
func (s Step) installArgs() string {
	var b strings.Builder
	for _, f := range []struct{ flag, v string }{{"--index-url", s.IndexURL}, {"--extra-index-url", s.ExtraIndexURL}, {"--find-links", s.FindLinks}} {
		if f.v != "" {
			b.WriteString(" " + f.flag + " " + shellQuote(f.v))
		}
	}
	if s.Pre {
		b.WriteString(" --pre")
	}
	for _, r := range s.Requirements {
		b.WriteString(" -r " + shellQuote(r))
	}
	if s.ExtraOptions != "" {
		b.WriteString(" " + s.ExtraOptions)
	}
	if len(s.Packages) > 0 {
		b.WriteString(" " + quoteAll(s.Packages))
	}
	return b.String()
}

// ValidateSteps checks every step and their order.
func ValidateSteps(steps []Step) error {
	mounted := ""
	for i, st := range steps {
		if err := st.Validate(i + 1); err != nil {
			return err
		}
		if mounted != "" && st.MakesLayer() && !(st.Type == "add_local" && !st.Copy) {
			return errdefs.Invalid("step %d (%s) comes after add_local of %s with copy=False, whose files are added when a container starts; "+
				"move the build step before it, or use copy=True", i+1, st.Describe(), mounted)
		}
		if st.Type == "add_local" && !st.Copy {
			mounted = st.Remote
		}
	}
	return nil
}

// StepHash names the image that workspace ws makes by applying step to the image named parent:
// the cache key of a built step. It holds the workspace, so one workspace never gets a layer
// that another built (nor learns from a fast build that another built the same steps); only
// the bases (debian_slim, scratch, registry and archive images), which hold nothing of any
// workspace, are shared. It is the same for a step however the parent was reached (steps
// over debian_slim, or from_id of an image of those steps).
func StepHash(ws, parent string, s Step) string {
	// A NUL cannot occur in a parent's name, so no other parent and workspace give this text.
	return ChainHash(parent+"\x00workspace="+ws, s)
}

// ChainHash names the image made by applying step to the image named parent.
func ChainHash(parent string, s Step) string {
	b, _ := json.Marshal(s) // strings, bools and a map of strings: it cannot fail
	sum := sha256.Sum256(append([]byte(parent+"\n"), b...))
	return hex.EncodeToString(sum[:])
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = shellQuote(s)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,_-+=:/@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
