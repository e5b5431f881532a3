package api

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The OpenAPI document must describe exactly the routes that the API registers. No YAML
// library is a dependency, so the document is read as text: its operations are the method keys
// under each path key of its top-level `paths:` block (the layout docs/openapi.yaml uses: paths
// indented two spaces, methods four). Path parameter names may differ ({id} vs {sandbox_id}), so
// both sides compare with every "{name}" turned into "{}".

const openapiFile = "../../docs/openapi.yaml"

var (
	routeRE   = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/v1/\S*)$`)
	paramRE   = regexp.MustCompile(`\{[^}]*\}`)
	yamlPath  = regexp.MustCompile(`^  ["']?(/[^"':]*)["']?:\s*$`)
	yamlOp    = regexp.MustCompile(`^    (get|head|post|put|patch|delete|options|trace):\s*$`)
	yamlNoSec = regexp.MustCompile(`^      security:\s*\[\s*\]\s*$`)
)

func normRoute(method, path string) string {
	return strings.ToUpper(method) + " " + paramRE.ReplaceAllString(path, "{}")
}

// handlerRoutes returns the routes the API registers, plus the unauthenticated health check.
func handlerRoutes(t *testing.T) map[string]bool {
	t.Helper()
	routes := map[string]bool{normRoute("GET", "/v1/health"): true}
	for _, r := range (&API{}).Routes() {
		m := routeRE.FindStringSubmatch(r)
		if m == nil {
			t.Fatalf("route %q is not METHOD /v1/...", r)
		}
		routes[normRoute(m[1], m[2])] = true
	}
	for _, must := range []string{"POST /v1/sandboxes", "GET /v1/sandboxes/{}/files/stat", "GET /v1/workers/{}/assignments"} {
		if !routes[must] {
			t.Fatalf("route %q is not registered", must)
		}
	}
	return routes
}

// openapiOps returns the document's operations, and for each whether it sets `security: []`.
func openapiOps(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(openapiFile)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	inPaths, path, op := false, "", ""
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if !strings.HasPrefix(line, " ") { // a top-level key
			inPaths = strings.HasPrefix(line, "paths:")
			path, op = "", ""
			continue
		}
		if !inPaths {
			continue
		}
		if m := yamlPath.FindStringSubmatch(line); m != nil {
			path, op = m[1], ""
			continue
		}
		if m := yamlOp.FindStringSubmatch(line); m != nil && path != "" {
			op = normRoute(m[1], path)
			if _, dup := ops[op]; dup {
				t.Errorf("%s: operation %s appears twice", openapiFile, op)
			}
			ops[op] = false
			continue
		}
		if op != "" && yamlNoSec.MatchString(line) {
			ops[op] = true
		}
	}
	if len(ops) == 0 {
		t.Fatalf("%s: no operations found under a top-level paths: key", openapiFile)
	}
	return ops
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	routes := handlerRoutes(t)
	ops := openapiOps(t)
	for _, r := range sorted(routes) {
		if _, ok := ops[r]; !ok {
			t.Errorf("route %s is registered by the API but not described in %s", r, openapiFile)
		}
	}
	for _, o := range sorted(ops) {
		if !routes[o] {
			t.Errorf("%s describes %s, which the API does not register", openapiFile, o)
		}
	}
}

func TestOpenAPISecurity(t *testing.T) {
	b, err := os.ReadFile(openapiFile)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^security:\s*\n\s+- bearerAuth: \[\]`).Match(b) {
		t.Errorf("%s: want a global `security: [bearerAuth]` requirement", openapiFile)
	}
	ops := openapiOps(t)
	for _, o := range sorted(ops) {
		open := ops[o]
		if o == "GET /v1/health" && !open {
			t.Errorf("%s: GET /v1/health needs no auth; want `security: []` on it", openapiFile)
		}
		if o != "GET /v1/health" && open {
			t.Errorf("%s: %s requires the bearer token; remove its `security: []`", openapiFile, o)
		}
	}
}

func sorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
