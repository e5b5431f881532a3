package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is gust's module path; the table names packages relative to it.
const module = "github.com/gust-run/gust"

// allowed lists, for every package of gust (the main module, and sdk/go, its own module), the
// gust packages its non-test files may import. It is in dependency order: a package lists only
// packages above it. docs/architecture.md describes each one.
//
// To add an import, first check that the design allows it (design.md's "Shape" and "How we
// write code here", the package doc comments, docs/architecture.md), then add it here and
// correct any doc comment that says who imports the package. The rules below are the design's
// hard lines: an entry that breaks one fails TestTableFollowsDesign however it got here.
var allowed = map[string][]string{
	// Leaves: they import nothing of gust's.
	"internal/errdefs":    {},
	"internal/ids":        {},
	"internal/gpu":        {},
	"internal/wire":       {},
	"internal/reaper":     {},
	"internal/initproto":  {},
	"internal/autoscaler": {},
	"internal/metering":   {"internal/errdefs"},
	"internal/auth":       {"internal/errdefs", "internal/ids"},
	"internal/egress":     {},
	"internal/tlsconf":    {},
	"internal/network":    {},
	"sdk/python":          {},
	"sdk/go":              {},
	"test/integration":    {}, // only test files, which are not counted
	"test/network":        {}, // only test files, which are not counted
	"internal/depcheck":   {}, // only this test
	"internal/contract":   {}, // only the SDK contract test

	// Helpers.
	"internal/lifecycle": {"internal/errdefs"},
	"internal/httpapi":   {"internal/errdefs"},

	// Models, shared by the control plane, the store and the worker.
	"internal/image":    {"internal/errdefs", "internal/reaper"},
	"internal/sandbox":  {"internal/errdefs", "internal/gpu", "internal/lifecycle", "internal/wire"},
	"internal/function": {"internal/errdefs", "internal/gpu", "internal/lifecycle", "internal/sandbox", "internal/wire"},

	// Containers: gust-init inside, the runtime outside.
	"internal/containerinit": {"internal/initproto"},
	"internal/container":     {"internal/initproto", "internal/reaper"},
	// The machine's GPUs: discovery, CDI injection, sampling (the worker's).
	"internal/nvidia": {"internal/gpu", "internal/reaper"},

	// The ingress: tunnels into sandboxes, on the server machine.
	"internal/ingress": {"internal/errdefs", "internal/ids", "internal/sandbox", "internal/workerproto"},

	// The server↔worker protocol.
	"internal/workerproto": {"internal/errdefs", "internal/gpu", "internal/httpapi", "internal/metering", "internal/sandbox", "internal/tlsconf", "internal/wire"},

	// The worker.
	"internal/worker": {"internal/container", "internal/egress", "internal/errdefs", "internal/gpu", "internal/httpapi", "internal/ids",
		"internal/image", "internal/initproto", "internal/lifecycle", "internal/metering", "internal/network", "internal/nvidia", "internal/reaper", "internal/sandbox",
		"internal/tlsconf", "internal/volume", "internal/wire", "internal/workerproto", "sdk/python"},

	// Volumes' versions and blobs, shared by the API and the worker.
	"internal/volume": {"internal/errdefs", "internal/ids"},

	// The control plane: the store, its three parts, the API over them, the assembly.
	"internal/store": {"internal/auth", "internal/errdefs", "internal/function", "internal/ids", "internal/image", "internal/metering", "internal/sandbox"},
	"internal/fleet": {"internal/auth", "internal/errdefs", "internal/gpu", "internal/ids", "internal/image", "internal/sandbox",
		"internal/store", "internal/workerproto"},
	"internal/dispatch": {"internal/autoscaler", "internal/errdefs", "internal/function", "internal/ids",
		"internal/lifecycle", "internal/sandbox", "internal/store", "internal/wire", "internal/workerproto"},
	"internal/imagebuild": {"internal/auth", "internal/errdefs", "internal/ids", "internal/image", "internal/metering", "internal/sandbox", "internal/store", "internal/workerproto"},
	"internal/budget":     {"internal/auth", "internal/errdefs", "internal/metering", "internal/sandbox", "internal/store"},
	"internal/endpoint":   {"internal/auth", "internal/dispatch", "internal/errdefs", "internal/function", "internal/store"},
	"internal/api": {"internal/auth", "internal/budget", "internal/dispatch", "internal/errdefs", "internal/fleet", "internal/function", "internal/httpapi",
		"internal/ids", "internal/image", "internal/imagebuild", "internal/ingress", "internal/metering", "internal/sandbox", "internal/store", "internal/volume", "internal/wire",
		"internal/workerproto"},
	"internal/server": {"internal/api", "internal/budget", "internal/dispatch", "internal/endpoint", "internal/fleet", "internal/image", "internal/imagebuild", "internal/ingress",
		"internal/metering", "internal/sandbox", "internal/store"},

	// The one binary.
	"cmd/gust": {"internal/container", "internal/containerinit", "internal/egress", "internal/httpapi", "internal/image", "internal/ingress", "internal/metering", "internal/reaper",
		"internal/server", "internal/store", "internal/tlsconf", "internal/volume", "internal/worker", "sdk/go", "sdk/python"},
}

// Groups the rules speak of.
var (
	controlPlane = []string{"internal/api", "internal/budget", "internal/fleet", "internal/dispatch", "internal/imagebuild", "internal/server", "internal/store"}
	workerSide   = []string{"internal/worker", "internal/container", "internal/containerinit"}
	protocols    = []string{"internal/workerproto", "internal/initproto", "internal/httpapi"}
	models       = []string{"internal/sandbox", "internal/function", "internal/image", "internal/gpu", "internal/wire",
		"internal/ids", "internal/lifecycle", "internal/errdefs", "internal/autoscaler", "internal/metering"}
	parts = []string{"internal/fleet", "internal/dispatch", "internal/imagebuild"}
)

// rule is a line the design draws: packages in from must not import packages in to (a package
// is never barred from itself). When onlyFrom is set instead of from, every package not in it
// is barred from to: "imported by X only" (an empty, non-nil onlyFrom: imported by nothing).
type rule struct {
	from, onlyFrom, to []string
	why                string
}

var rules = []rule{
	{from: []string{"sdk/go", "sdk/python"}, to: all(),
		why: "the SDKs speak only the HTTP API (docs/api.md) and keep their own copy of its types; they import nothing of gust's"},
	{from: []string{"cmd/gust"}, to: []string{"internal/api", "internal/fleet", "internal/dispatch", "internal/imagebuild"},
		why: "cmd/gust reaches the control plane through internal/server, which assembles it; give server.Config or server.Server what the command needs"},
	{from: models, to: join(controlPlane, workerSide, protocols),
		why: "model packages are shared by the control plane, the store and the worker, so they import none of them"},
	{from: []string{"internal/store"}, to: join(controlPlane, workerSide, protocols),
		why: "the store keeps models (sandbox, function, image); the control plane calls it, never the other way round"},
	{from: []string{"internal/workerproto"}, to: join(controlPlane, workerSide),
		why: "workerproto is the protocol both sides share; it imports neither the server's packages nor the worker"},
	{from: []string{"internal/api"}, to: join(workerSide, []string{"internal/initproto"}),
		why: "the API reaches workers only through the fleet and workerproto's WorkerClient"},
	{from: []string{"internal/worker"}, to: controlPlane,
		why: "the worker talks to the server only through workerproto.ServerClient (it runs alone under `gust worker`) and never reads the database"},
	{from: []string{"internal/containerinit"}, to: join(controlPlane, workerSide, []string{"internal/workerproto", "internal/image"}),
		why: "gust-init is PID 1 in every container and speaks only initproto to the worker"},
	{from: parts, to: join(parts, []string{"internal/api", "internal/server"}),
		why: "the control plane's parts own their state and meet in internal/server; one reaches another through an interface defined where it is consumed (dispatch.Placer, imagebuild.Fleet) or a callback (fleet.OnContainerEnd)"},
	{onlyFrom: []string{"cmd/gust"}, to: []string{"internal/server", "internal/worker", "internal/containerinit"},
		why: "the server, the worker and gust-init are run by the one binary and imported by it alone"},
	{onlyFrom: []string{}, to: []string{"internal/contract", "internal/depcheck", "test/integration", "test/network"},
		why: "packages that hold only tests are imported by nothing"},
	{onlyFrom: []string{"internal/server"}, to: []string{"internal/api"},
		why: "the HTTP API is served by the server that assembles it, and by nothing else"},
	{onlyFrom: []string{"internal/container", "internal/containerinit", "internal/worker"}, to: []string{"internal/initproto"},
		why: "initproto is spoken between the worker's side and gust-init only"},
}

// all is every package in the table.
func all() []string {
	var out []string
	for p := range allowed {
		out = append(out, p)
	}
	return out
}

func join(lists ...[]string) []string { return slices.Concat(lists...) }

// breaks returns the rules that pkg importing imp breaks.
func breaks(pkg, imp string) []rule {
	var out []rule
	for _, r := range rules {
		if pkg == imp || !slices.Contains(r.to, imp) {
			continue
		}
		if r.onlyFrom != nil && !slices.Contains(r.onlyFrom, pkg) || r.from != nil && slices.Contains(r.from, pkg) {
			out = append(out, r)
		}
	}
	return out
}

const tableFile = "internal/depcheck/deps_test.go"

// TestRules checks that the rules catch what the design forbids and let through what it allows.
func TestRules(t *testing.T) {
	for _, tc := range []struct {
		pkg, imp string
		broken   bool
	}{
		{"sdk/go", "internal/api", true},
		{"sdk/go", "internal/errdefs", true},
		{"sdk/python", "internal/worker", true},
		{"sdk/go", "sdk/go", false},
		{"cmd/gust", "internal/dispatch", true},
		{"cmd/gust", "internal/fleet", true},
		{"cmd/gust", "internal/api", true},
		{"cmd/gust", "internal/server", false},
		{"internal/gpu", "internal/store", true},
		{"internal/sandbox", "internal/workerproto", true},
		{"internal/function", "internal/sandbox", false},
		{"internal/workerproto", "internal/worker", true},
		{"internal/workerproto", "internal/fleet", true},
		{"internal/api", "internal/container", true},
		{"internal/api", "internal/worker", true},
		{"internal/api", "internal/fleet", false},
		{"internal/worker", "internal/store", true},
		{"internal/worker", "internal/dispatch", true},
		{"internal/worker", "internal/workerproto", false},
		{"internal/dispatch", "internal/fleet", true},
		{"internal/fleet", "internal/dispatch", true},
		{"internal/imagebuild", "internal/fleet", true},
		{"internal/dispatch", "internal/api", true},
		{"internal/store", "internal/fleet", true},
		{"internal/containerinit", "internal/image", true},
		{"internal/fleet", "internal/initproto", true},
		{"internal/worker", "internal/initproto", false},
		{"internal/dispatch", "internal/server", true},
		{"cmd/gust", "internal/contract", true},
	} {
		t.Run(tc.pkg+"→"+tc.imp, func(t *testing.T) {
			if got := len(breaks(tc.pkg, tc.imp)) > 0; got != tc.broken {
				t.Errorf("breaks(%s, %s) = %v, want %v", tc.pkg, tc.imp, got, tc.broken)
			}
		})
	}
}

// TestImports checks every package's gust imports against the table.
func TestImports(t *testing.T) {
	pkgs := listPackages(t)
	for _, p := range pkgs {
		list, ok := allowed[p.rel]
		if !ok {
			t.Errorf("package %s is not in the table in %s: add allowed[%q] with the gust packages it may import (today: %s), after checking them against the design and the rules there",
				p.rel, tableFile, p.rel, orNone(p.imports))
			continue
		}
		for _, imp := range p.imports {
			if slices.Contains(list, imp) {
				continue
			}
			if broken := breaks(p.rel, imp); len(broken) > 0 {
				t.Errorf("%s imports %s, which the design does not allow: %s. Remove the import (%s).",
					p.rel, imp, broken[0].why, p.where(imp))
				continue
			}
			t.Errorf("%s imports %s, which is not on its list in %s (%s). If the design allows %s to depend on %s (read both package doc comments and docs/architecture.md), add %q to allowed[%q] and correct the doc comments that say who imports %s; if not, reach what it needs through a small interface defined in %s, or move the code.",
				p.rel, imp, tableFile, p.where(imp), p.rel, imp, imp, p.rel, imp, p.rel)
		}
	}
}

// TestTableFollowsDesign checks that no entry of the table breaks a rule.
func TestTableFollowsDesign(t *testing.T) {
	for pkg, list := range allowed {
		for _, imp := range list {
			for _, r := range breaks(pkg, imp) {
				t.Errorf("allowed[%q] lists %s, which breaks a design rule: %s. Take it out of the table in %s.", pkg, imp, r.why, tableFile)
			}
			if _, ok := allowed[imp]; !ok {
				t.Errorf("allowed[%q] lists %s, which is not a package in the table; take it out of %s.", pkg, imp, tableFile)
			}
		}
	}
}

// TestTableIsCurrent checks that the table names no package that is gone and allows no import
// that nobody makes, so that it stays a true picture of the dependencies.
func TestTableIsCurrent(t *testing.T) {
	have := map[string]pkg{}
	for _, p := range listPackages(t) {
		have[p.rel] = p
	}
	for name, list := range allowed {
		p, ok := have[name]
		if !ok {
			t.Errorf("the table in %s lists %s, which is no longer a package; remove allowed[%q].", tableFile, name, name)
			continue
		}
		for _, imp := range list {
			if !slices.Contains(p.imports, imp) {
				t.Errorf("%s does not import %s; take %q out of allowed[%q] in %s (and out of %s's doc comment if it names %s).",
					name, imp, imp, name, tableFile, imp, name)
			}
		}
	}
}

// pkg is one package and the gust packages it imports, as module-relative paths.
type pkg struct {
	rel     string
	imports []string
	files   map[string][]string // import → the files that import it
}

func (p pkg) where(imp string) string {
	if fs := p.files[imp]; len(fs) > 0 {
		return "in " + strings.Join(fs, ", ")
	}
	return "file unknown"
}

// listPackages lists the packages of the main module (their non-test files, including those
// excluded by build constraints) and of the sdk/go module (with its tests: the SDK's tests may
// not reach into the server either).
func listPackages(t *testing.T) []pkg {
	t.Helper()
	root := moduleRoot(t)
	visitDirs(t, root)
	out := goList(t, root, false)
	return append(out, goList(t, filepath.Join(root, "sdk", "go"), true)...)
}

// visitDirs reads every directory of the tree. go test caches a passing result against the
// files and directories the test itself opened, not those the go command it runs read: opening
// each directory makes a new package (or file) anywhere invalidate that cached result.
func visitDirs(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the source tree: %v", err)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "env", "GOMOD")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v (the test needs the go command on PATH, as `go test` provides)", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD is empty: run the test from inside the gust module")
	}
	return filepath.Dir(gomod)
}

// listed is what the test reads of `go list -json`.
type listed struct {
	ImportPath     string
	Dir            string
	GoFiles        []string
	IgnoredGoFiles []string
	Imports        []string
	TestGoFiles    []string
	XTestGoFiles   []string
	TestImports    []string
	XTestImports   []string
	Error          *struct{ Err string }
}

func goList(t *testing.T, dir string, withTests bool) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", dir, err, stderr.String())
	}
	var out []pkg
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("reading go list's answer in %s: %v", dir, err)
		}
		if l.Error != nil {
			t.Fatalf("go list: package %s: %s", l.ImportPath, l.Error.Err)
		}
		p := pkg{rel: strings.TrimPrefix(l.ImportPath, module+"/"), files: map[string][]string{}}
		files := slices.Clone(l.GoFiles)
		for _, f := range l.IgnoredGoFiles {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
		if withTests {
			files = append(files, l.TestGoFiles...)
			files = append(files, l.XTestGoFiles...)
		}
		for _, f := range files {
			for _, imp := range fileImports(t, filepath.Join(l.Dir, f)) {
				rel, ok := strings.CutPrefix(imp, module+"/")
				if !ok || imp == l.ImportPath {
					continue
				}
				if !slices.Contains(p.imports, rel) {
					p.imports = append(p.imports, rel)
				}
				p.files[rel] = append(p.files[rel], filepath.Join(p.rel, f))
			}
		}
		slices.Sort(p.imports)
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatalf("go list found no packages in %s", dir)
	}
	return out
}

// fileImports reads a file's imports. Reading the files (rather than taking go list's
// Imports) also counts files that build constraints leave out on this machine.
func fileImports(t *testing.T, path string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatalf("reading the imports of %s: %v", path, err)
	}
	var out []string
	for _, is := range f.Imports {
		p, err := strconv.Unquote(is.Path.Value)
		if err != nil {
			t.Fatalf("%s: import %s: %v", path, is.Path.Value, err)
		}
		out = append(out, p)
	}
	return out
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return fmt.Sprintf("%q", list)
}
