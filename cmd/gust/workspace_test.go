package main

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func TestWorkspaceCommands(t *testing.T) {
	f := newFakeTenancy(t)
	path := cliEnv(t, `{"server_url": "`+f.srv.URL+`", "token": "`+opToken+`"}`)

	out, _, err := runCLI(t, runWorkspaceCreate, "", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := "workspace acme (ws-2)\ntoken_id:     " + newID + "\ntoken_secret: " + newSecret + "\n"; out != want {
		t.Errorf("create: %q, want %q", out, want)
	}
	out, _, err = runCLI(t, runWorkspaceCreate, "", "acme", "--set-profile", "acme")
	if err != nil || strings.Contains(out, newSecret) {
		t.Fatalf("create --set-profile: %q, %v", out, err)
	}
	m := readConfigMap(t, path)
	if m["active_profile"] != "default" || m["profiles"].(map[string]any)["acme"].(map[string]any)["token_id"] != newID {
		t.Errorf("config %v", m)
	}
	if _, _, err := runCLI(t, runWorkspaceCreate, ""); err == nil {
		t.Error("create without a name: no error")
	}

	out, _, err = runCLI(t, runWorkspaceList, "")
	if err != nil || !strings.HasPrefix(out, "WORKSPACE ID  NAME     CREATED\nws-default    default  ") || !strings.Contains(out, "\nws-2          zeta     ") {
		t.Errorf("list: %q, %v", out, err)
	}

	// Without an id: the caller's workspace, from whoami.
	out, _, err = runCLI(t, runWorkspaceQuotas, "")
	want := "workspace            ws-default\nsandboxes            10\ncpu                  4\nmemory_mib           8192\n" +
		"gpus                 unlimited\nimage_disk_mib       unlimited\nrequests_per_second  unlimited\nkv_store_mib         unlimited\nvolume_mib           unlimited\n"
	if err != nil || out != want {
		t.Errorf("quotas: %q, %v\nwant %q", out, err, want)
	}
	if f.body("PUT /v1/workspaces/{id}/quotas") != nil {
		t.Error("showing quotas PUT them")
	}
	// Setting some keeps the others.
	out, _, err = runCLI(t, runWorkspaceQuotas, "", "ws-2", "--gpus", "2", "--cpu", "1.5", "--json")
	if err != nil {
		t.Fatal(err)
	}
	wantBody := map[string]any{"sandboxes": 10.0, "cpu": 1.5, "memory_mib": 8192.0, "gpus": 2.0, "image_disk_mib": 0.0, "requests_per_second": 0.0, "kv_store_mib": 0.0, "volume_mib": 0.0}
	if got := f.body("PUT /v1/workspaces/{id}/quotas"); !reflect.DeepEqual(got, wantBody) {
		t.Errorf("PUT body %v, want %v", got, wantBody)
	}
	var q gust.Quotas
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.GPUs != 2 {
		t.Errorf("--json: %q, %v", out, err)
	}
	if _, _, err := runCLI(t, runWorkspaceQuotas, "", "--sandboxes", "-1"); err == nil || !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("negative: %v", err)
	}
	if _, _, err := runCLI(t, runWorkspaceQuotas, "", "ws-none"); err == nil {
		t.Error("unknown workspace: no error")
	}
}

func TestWhoamiAndAudit(t *testing.T) {
	f := newFakeTenancy(t)
	cliEnv(t, `{"active_profile": "acme", "profiles": {"acme": {"server_url": "`+f.srv.URL+`", "token_id": "`+ownerID+`", "token_secret": "`+ownerSec+`"}}}`)

	out, _, err := runCLI(t, runWhoami, "")
	want := "server     " + f.srv.URL + "\nprofile    acme\nworkspace  acme (ws-1)\ntoken      " + ownerID + "\nrole       owner\n"
	if err != nil || out != want {
		t.Errorf("whoami: %q, %v\nwant %q", out, err, want)
	}

	out, _, err = runCLI(t, runAudit, "", "--since", "2h", "--token-id", ownerID, "--route", "POST /v1/sandboxes", "--object", "sb-1", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if want := "limit=2&object=sb-1&route=POST+%2Fv1%2Fsandboxes&since=7200&token_id=" + ownerID; f.query != want {
		t.Errorf("query %q, want %q", f.query, want)
	}
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	t2 := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	want = "TIME                 TOKEN                  ROUTE                   OBJECT  STATUS  ERROR\n" +
		t1 + "  " + ownerID + "  POST /v1/sandboxes      sb-1    201     -\n" +
		t2 + "  " + newID + "  DELETE /v1/tokens/{id}  -       404     no token tk-x\n"
	if out != want {
		t.Errorf("audit:\n%s\nwant\n%s", out, want)
	}
	if _, _, err := runCLI(t, runAudit, "", "--since", "2026-01-02T15:04:05+01:00"); err != nil || f.query != "since=2026-01-02T14%3A04%3A05Z" {
		t.Errorf("since a time: %v, query %q", err, f.query)
	}
	if _, _, err := runCLI(t, runAudit, "", "--since", "yesterday"); err == nil {
		t.Error("--since yesterday: no error")
	}
}

func TestProfileCommands(t *testing.T) {
	cliEnv(t, `{"active_profile": "b", "profiles": {"a": {"server_url": "http://a:1", "token_id": "tk-a", "token_secret": "ts-a"}, "b": {"server_url": "http://b:1", "token": "op"}}}`)
	out, _, err := runCLI(t, runProfileList, "")
	want := "   PROFILE  SERVER      TOKEN\n   a        http://a:1  tk-a\n*  b        http://b:1  (single token)\n"
	if err != nil || out != want {
		t.Errorf("list: %q, %v\nwant %q", out, err, want)
	}
	if strings.Contains(out, "ts-a") {
		t.Error("list shows a secret")
	}
	if out, _, err := runCLI(t, runProfileCurrent, ""); err != nil || out != "b\n" {
		t.Errorf("current: %q, %v", out, err)
	}
	if out, _, err := runCLI(t, runProfileActivate, "", "a"); err != nil || out != "profile \"a\" is active\n" {
		t.Errorf("activate: %q, %v", out, err)
	}
	if out, _, err := runCLI(t, runProfileCurrent, ""); err != nil || out != "a\n" {
		t.Errorf("current after activate: %q, %v", out, err)
	}
	if _, _, err := runCLI(t, runProfileActivate, "", "zz"); err == nil || !strings.Contains(err.Error(), `no profile "zz"`) {
		t.Errorf("activate zz: %v", err)
	}
	t.Setenv("GUST_PROFILE", "b")
	if out, _, err := runCLI(t, runProfileCurrent, ""); err != nil || out != "b\n" {
		t.Errorf("current with GUST_PROFILE: %q, %v", out, err)
	}
	_, errOut, err := runCLI(t, runProfileActivate, "", "a")
	if err != nil || !strings.Contains(errOut, "GUST_PROFILE=b is set") {
		t.Errorf("activate under GUST_PROFILE: %q, %v", errOut, err)
	}
}

func TestProfileWithoutFile(t *testing.T) {
	cliEnv(t, "")
	if _, _, err := runCLI(t, runProfileList, ""); err == nil || !strings.Contains(err.Error(), "gust up") {
		t.Errorf("list: %v", err)
	}
}

// gust up stores its server and token as the active profile "default", keeping the others.
func TestWriteClientConfig(t *testing.T) {
	path := cliEnv(t, `{"active_profile": "acme", "profiles": {"acme": {"server_url": "http://remote:1", "token_id": "tk-a", "token_secret": "ts-a"}, "default": {"server_url": "http://old:1", "token": "old"}}}`)
	got, err := writeClientConfig("http://127.0.0.1:7420", "op-new", nil)
	if err != nil || got != path {
		t.Fatalf("writeClientConfig = %q, %v", got, err)
	}
	want := map[string]any{"active_profile": "default", "profiles": map[string]any{
		"acme":    map[string]any{"server_url": "http://remote:1", "token_id": "tk-a", "token_secret": "ts-a"},
		"default": map[string]any{"server_url": "http://127.0.0.1:7420", "token": "op-new"},
	}}
	if m := readConfigMap(t, path); !reflect.DeepEqual(m, want) {
		t.Errorf("config %v\nwant %v", m, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}
