package integration

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
)

// switchAuth is a transport that, once on, presents another credential: a handle the SDK
// made for workspace A (a sandbox, a function, a call) is then used by workspace B, as an
// attacker who learnt the IDs would.
type switchAuth struct {
	on   atomic.Bool
	cred string
}

func (s *switchAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.on.Load() {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+s.cred)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestTenantCrossWorkspaceGoSDK is the Go SDK's and the CLI's half of TestTenantCrossWorkspace:
// workspace B's token against each of A's objects (a sandbox and its exec, an app, a deployed
// function, a call, an image, a secret, a blob, a token, the workspace's quotas), first through
// the routes TestTenantCrossWorkspace leaves out (404 each), then through every Go SDK call
// that names one, directly by ID and through handles made for A: each is the SDK's not-found
// error (ErrNotFound), B's lists show none of A's objects. Then CLI commands with B's token.
// Nothing of A's changed.
func TestTenantCrossWorkspaceGoSDK(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A's objects, made with the operator's token (an owner of ws-default).
	sbID := createRaw(t, map[string]any{"isolation": "runc"})
	const secretName = "tenant-a-go-secret"
	if err := api("POST", "/v1/secrets", map[string]any{"name": secretName, "env": map[string]string{"K": "a-only"}, "overwrite": true}, nil); err != nil {
		t.Fatal(err)
	}
	blob := uploadCode(t, map[string]string{"fnmod.py": fnModule})
	var fapp fnApp
	const appName = "tenant-a-go"
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": appName, "mode": "deployed", "code": map[string]string{"blob": blob, "module": "fnmod"},
		"functions": []map[string]any{{"name": "slow", "image_id": gust.imageID}}}, &fapp); err != nil {
		t.Fatal(err)
	}
	defer api("POST", "/v1/apps/"+fapp.AppID+"/stop", nil, nil)
	fnID := fapp.Functions["slow"]

	b, _ := newWorkspace(t, "tenant-b-go")
	bID, bSecret, _ := strings.Cut(b, ":")
	sw := &switchAuth{cred: b}
	ca, err := sdk.NewClient(sdk.Config{ServerURL: gust.url, Token: gust.token, HTTPClient: &http.Client{Transport: sw}})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := sdk.NewClient(sdk.Config{ServerURL: gust.url, TokenID: bID, TokenSecret: bSecret})
	if err != nil {
		t.Fatal(err)
	}
	// A's handles.
	sb, err := ca.Sandbox(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := ca.Function(ctx, fnID)
	if err != nil {
		t.Fatal(err)
	}
	call, err := fn.Spawn(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}

	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("B: %s: %v, want the SDK's not-found error", what, err)
		}
	}
	// The routes naming an object that TestTenantCrossWorkspace leaves out, raw.
	var ex struct {
		ID string `json:"exec_id"`
	}
	if err := api("POST", "/v1/sandboxes/"+sbID+"/execs", map[string]any{"command": []string{"sleep", "30"}, "stream": false}, &ex); err != nil || ex.ID == "" {
		t.Fatalf("A's exec: %v %+v", err, ex)
	}
	var tok struct {
		ID string `json:"token_id"`
	}
	if err := api("POST", "/v1/tokens", map[string]any{"name": "tenant-a-go", "role": "readonly"}, &tok); err != nil {
		t.Fatal(err)
	}
	defer api("DELETE", "/v1/tokens/"+tok.ID, nil, nil)
	var wsA struct {
		ID string `json:"workspace_id"`
	}
	if err := api("GET", "/v1/whoami", nil, &wsA); err != nil || wsA.ID == "" {
		t.Fatalf("A's workspace: %v %+v", err, wsA)
	}
	sbp, exp := "/v1/sandboxes/"+sbID, "/v1/sandboxes/"+sbID+"/execs/"+ex.ID
	for _, tt := range []struct {
		method, path string
		body         any
	}{
		{"GET", exp, nil},
		{"GET", exp + "/output", nil},
		{"POST", exp + "/stdin", map[string]any{"data": "eA==", "eof": true}},
		{"POST", exp + "/signal", map[string]any{"signal": 9}},
		{"POST", exp + "/resize", map[string]any{"rows": 10, "cols": 10}},
		{"GET", sbp + "/files/list?path=/", nil},
		{"GET", sbp + "/files/stat?path=/etc/hostname", nil},
		{"POST", sbp + "/files/mkdir", map[string]any{"path": "/tmp/b-dir"}},
		{"DELETE", sbp + "/files?path=/etc/hostname", nil},
		{"GET", "/v1/apps/" + fapp.AppID + "/logs", nil},
		{"POST", "/v1/apps/" + fapp.AppID + "/heartbeat", nil},
		{"GET", "/v1/functions/" + fnID, nil},
		{"POST", "/v1/functions/lookup", map[string]any{"app_name": appName, "name": "slow"}},
		{"POST", "/v1/functions/" + fnID + "/calls", map[string]any{"kind": "spawn", "inputs": []map[string]any{{"args": jsonArgs(1), "format": "json"}}}},
		{"POST", "/v1/functions/" + fnID + "/autoscaler", map[string]any{"min_containers": 3}},
		{"POST", "/v1/functions/" + fnID + "/variants", map[string]any{"options": map[string]any{"memory": 512}}},
		{"GET", "/v1/calls/" + call.ID, nil},
		{"GET", "/v1/calls/" + call.ID + "/stream", nil},
		{"POST", "/v1/calls/" + call.ID + "/inputs", map[string]any{"inputs": []map[string]any{{"args": jsonArgs(1), "format": "json"}}}},
		{"POST", "/v1/calls/" + call.ID + "/cancel", map[string]any{}},
		{"GET", "/v1/blobs/" + blob, nil},
		{"DELETE", "/v1/tokens/" + tok.ID, nil},
		{"GET", "/v1/workspaces/" + wsA.ID + "/quotas", nil},
	} {
		if code, body := apiAs(t, b, tt.method, tt.path, tt.body); code != http.StatusNotFound {
			t.Errorf("B: %s %s: %d %s, want 404", tt.method, tt.path, code, body)
		}
	}

	// By ID, with B's own client.
	_, err = cb.Sandbox(ctx, sbID)
	notFound("Sandbox", err)
	_, err = cb.GetApp(ctx, fapp.AppID)
	notFound("GetApp", err)
	notFound("StopApp", cb.StopApp(ctx, fapp.AppID))
	for _, err := range cb.AppLogs(ctx, fapp.AppID, sdk.AppLogsOptions{}) {
		notFound("AppLogs", err)
		break
	}
	_, err = cb.Function(ctx, fnID)
	notFound("Function", err)
	_, err = cb.FunctionFromName(ctx, appName, "slow")
	notFound("FunctionFromName", err)
	_, err = cb.FunctionCallFromID(ctx, call.ID)
	notFound("FunctionCallFromID", err)
	_, err = cb.Image(ctx, gust.imageID)
	notFound("Image", err)
	notFound("DeleteImage", cb.DeleteImage(ctx, gust.imageID))
	_, err = cb.LookupSecret(ctx, secretName)
	notFound("LookupSecret", err)
	notFound("DeleteSecret", cb.DeleteSecret(ctx, secretName))
	_, err = cb.CreateSandbox(ctx, sdk.SandboxOptions{App: fapp.AppID, Image: gust.imageID})
	notFound("CreateSandbox in A's app", err)
	// B's lists hold none of A's objects.
	if list, err := cb.ListSandboxes(ctx, sdk.ListOptions{}); err != nil || len(list) != 0 {
		t.Errorf("B's ListSandboxes: %d sandboxes, %v", len(list), err)
	}
	if apps, err := cb.ListApps(ctx); err != nil || len(apps) != 0 {
		t.Errorf("B's ListApps: %d apps, %v", len(apps), err)
	}
	if secrets, err := cb.ListSecrets(ctx); err != nil || len(secrets) != 0 {
		t.Errorf("B's ListSecrets: %d secrets, %v", len(secrets), err)
	}
	if images, err := cb.ListImages(ctx); err != nil {
		t.Error(err)
	} else {
		for _, im := range images {
			if im.ID == gust.imageID {
				t.Errorf("B's ListImages shows A's image %s", im.ID)
			}
		}
	}

	// A's handles, used with B's credential.
	sw.on.Store(true)
	_, _, _, err = sb.Run(ctx, sdk.ExecOptions{Command: []string{"touch", "/tmp/b-was-here"}})
	notFound("Sandbox.Run", err)
	_, err = sb.ReadFile(ctx, "/etc/hostname")
	notFound("Sandbox.ReadFile", err)
	notFound("Sandbox.WriteFile", sb.WriteFile(ctx, "/tmp/b-was-here", []byte("b"), 0o644))
	_, err = sb.ListFiles(ctx, "/")
	notFound("Sandbox.ListFiles", err)
	notFound("Sandbox.Remove", sb.Remove(ctx, "/etc/hostname", false))
	notFound("Sandbox.SetTags", sb.SetTags(ctx, map[string]string{"owner": "b"}))
	_, err = sb.SnapshotFilesystem(ctx)
	notFound("Sandbox.SnapshotFilesystem", err)
	notFound("Sandbox.Logs", sb.Logs(ctx, false, nil, nil))
	notFound("Sandbox.Refresh", sb.Refresh(ctx))
	notFound("Sandbox.Terminate", sb.Terminate(ctx))
	_, err = fn.Spawn(ctx, 1)
	notFound("Function.Spawn", err)
	_, err = fn.Remote(ctx, 0)
	notFound("Function.Remote", err)
	notFound("FunctionCall.Get", call.Get(ctx, time.Second, nil))
	notFound("FunctionCall.Cancel", call.Cancel(ctx, true))
	sw.on.Store(false)

	// The CLI with B's token: A's sandbox is not found, its lists are B's.
	noConfig := t.TempDir() // B's credentials come from the environment alone
	cli := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, gust.bin, args...)
		cmd.Env = cleanEnv("GUST_SERVER_URL="+gust.url, "GUST_TOKEN_ID="+bID, "GUST_TOKEN_SECRET="+bSecret, "XDG_CONFIG_HOME="+noConfig)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{
		{"sandbox", "exec", sbID, "--", "touch", "/tmp/b-was-here"},
		{"sandbox", "rm", sbID},
		{"sandbox", "logs", sbID},
		{"app", "show", fapp.AppID},
		{"app", "stop", fapp.AppID},
		{"secret", "delete", secretName},
		{"image", "rm", gust.imageID},
	} {
		out, err := cli(args...)
		if err == nil || !strings.Contains(strings.ToLower(out), "not found") {
			t.Errorf("B: gust %s: %v %q, want not found", strings.Join(args, " "), err, out)
		}
	}
	for _, args := range [][]string{{"sandbox", "ls"}, {"app", "list"}, {"secret", "list"}} {
		out, err := cli(args...)
		if err != nil || strings.Contains(out, sbID) || strings.Contains(out, appName) || strings.Contains(out, secretName) {
			t.Errorf("B: gust %s: %v %q, want none of A's objects", strings.Join(args, " "), err, out)
		}
	}

	// Nothing of A's changed.
	if err := sb.Refresh(ctx); err != nil || sb.Status != sdk.StatusRunning || sb.Tags["owner"] != "" {
		t.Fatalf("A's sandbox after B's attempts: %+v %v", sb, err)
	}
	if out, _, code, err := sb.Run(ctx, sdk.ExecOptions{Command: []string{"sh", "-c", "test -e /tmp/b-was-here -o -e /tmp/b-dir && echo touched || echo clean; cat /etc/hostname"}}); err != nil || code != 0 || !strings.HasPrefix(string(out), "clean\n") || len(out) <= len("clean\n") {
		t.Fatalf("A's sandbox's files after B's attempts: %q %d %v", out, code, err)
	}
	if _, err := ca.LookupSecret(ctx, secretName); err != nil {
		t.Fatalf("A's secret after B's attempts: %v", err)
	}
	if _, err := ca.Image(ctx, gust.imageID); err != nil {
		t.Fatalf("A's image after B's attempts: %v", err)
	}
	if f, err := ca.Function(ctx, fnID); err != nil || f.ID != fnID {
		t.Fatalf("A's function after B's attempts: %v", err)
	}
	fc, err := ca.FunctionCallFromID(ctx, call.ID)
	if err != nil || fc.Status == "cancelled" || fc.Status == "terminated" {
		t.Fatalf("A's call after B's attempts: %+v %v", fc, err)
	}
	if err := call.Cancel(ctx, true); err != nil {
		t.Fatalf("A cancels its own call: %v", err)
	}
}
