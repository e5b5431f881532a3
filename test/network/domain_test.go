package network

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"
)

// checkPy runs connection checks from inside a container and says what each got: the status
// line and body of an HTTP/1.1 GET, or the error's type and text. A check is
// [target, port, Host header, tls, SNI or "" for none, verify]: target is a name (resolved by
// the container's resolver) or an address. Run as a script it takes the CA (PEM) and the
// checks (JSON) as arguments and prints the results as JSON; published as a module, check_all
// does the same for a function.
const checkPy = `
import json, socket, ssl, sys

def check(ca, target, port, host, use_tls, sni, verify):
    try:
        s = socket.create_connection((target, port), timeout=5)
    except socket.gaierror as e:
        return "gaierror %s" % e
    except OSError as e:
        return "connect %s %s" % (type(e).__name__, e)
    try:
        s.settimeout(5)
        if use_tls:
            if verify:
                ctx = ssl.create_default_context(cadata=ca)
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=sni or None)
        s.sendall(("GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        return head.split("\r\n")[0] + " | " + body
    except Exception as e:
        return "%s %s" % (type(e).__name__, e)
    finally:
        s.close()

def check_all(ca, checks):
    return {c[0]: check(ca, *c[1:]) for c in json.loads(checks)}

if __name__ == "__main__":
    print(json.dumps(check_all(sys.argv[1], sys.argv[2])))
`

// domainAllowlist is the containers' outbound_domain_allowlist in these tests: rebindName is
// allowed by name, so that only the address check stands between it and a private address.
var domainAllowlist = []string{webName, rebindName}

// domainCheck is one connection a container with domainAllowlist tries, and what it must get.
type domainCheck struct {
	name         string
	target       string
	port         int
	host         string
	tls          bool
	sni          string
	verify       bool
	want         []string // pieces of the result, all of them
	leakListener string   // a listener in inet that must see no connection, if any
}

var domainChecks = []domainCheck{
	// Resolved by the worker's resolver, redirected to the domain proxy, carried by name.
	{"http allowed", webName, 80, webName, false, "", false, []string{"200 OK", "hello from " + webAddr + ":80 host=" + webName}, ""},
	{"https allowed", webName, 443, webName, true, webName, true, []string{"200 OK", "hello from " + webAddr + ":443 host=" + webName}, ""},
	// Other names: the resolver refuses them...
	{"dns other", otherName, 80, otherName, false, "", false, []string{"gaierror"}, ""},
	// ...and the proxy refuses them when the container knows the address.
	{"http other by address", otherAddr, 80, otherName, false, "", false,
		[]string{"403 Forbidden", otherName + " is not in this container's outbound_domain_allowlist"}, otherAddr + ":80"},
	{"https other by address", otherAddr, 443, otherName, true, otherName, false, []string{"SSLError", "ACCESS_DENIED"}, otherAddr + ":443"},
	// Raw addresses name no allowed host.
	{"http raw address", webAddr, 80, webAddr, false, "", false, []string{"403 Forbidden", webAddr + " is not in this container's outbound_domain_allowlist"}, ""},
	{"https raw address", webAddr, 443, webAddr, true, "", false, []string{"SSLError", "ACCESS_DENIED"}, ""},
	// DNS rebinding: rebindName resolves to a private address. The resolver leaves it out, and
	// the proxy, resolving it itself, refuses to go there.
	{"dns rebind", rebindName, 80, rebindName, false, "", false, []string{"gaierror"}, privateAddrs[0] + ":80"},
	{"http rebind by address", webAddr, 80, rebindName, false, "", false, []string{"403 Forbidden", "DNS rebinding"}, privateAddrs[0] + ":80"},
	// Other ports are not open to a domain allowlist.
	{"other port", webAddr, 9000, webName, false, "", false, []string{"connect"}, webAddr + ":9000"},
}

// checksJSON is the checks as checkPy takes them.
func checksJSON(checks []domainCheck) string {
	var out [][]any
	for _, c := range checks {
		out = append(out, []any{c.name, c.target, c.port, c.host, c.tls, c.sni, c.verify})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inet.tlsCert.Raw}))
}

// verifyDomainChecks runs checks through run (in a sandbox or a function) and compares.
func verifyDomainChecks(t *testing.T, checks []domainCheck, run func(ca, checks string) map[string]string) {
	t.Helper()
	before := map[string]int{}
	for _, c := range checks {
		if c.leakListener != "" {
			before[c.leakListener] = connsTo(c.leakListener)
		}
	}
	got := run(caPEM(), checksJSON(checks))
	for _, c := range checks {
		res := got[c.name]
		for _, w := range c.want {
			if !strings.Contains(res, w) {
				t.Errorf("%s (%s:%d, Host %s): got %q, want %q in it", c.name, c.target, c.port, c.host, res, w)
				break
			}
		}
		if l := c.leakListener; l != "" && connsTo(l) != before[l] {
			t.Errorf("%s: the listener on %s saw a connection", c.name, l)
		}
	}
}

// TestDomainAllowlistSandbox: a sandbox with outbound_domain_allowlist reaches its names over
// HTTPS and HTTP, and nothing else: not other names, not bare addresses, not a name that
// resolves to a private address.
func TestDomainAllowlistSandbox(t *testing.T) { isolations(t, testDomainAllowlistSandbox) }

func testDomainAllowlistSandbox(t *testing.T, iso string) {
	needGust(t)
	id := newSandbox(t, with(map[string]any{"outbound_domain_allowlist": domainAllowlist}, iso))
	verifyDomainChecks(t, domainChecks, func(ca, checks string) map[string]string {
		out, errOut, code := execIn(t, id, "python3", "-c", checkPy, ca, checks)
		if code != 0 {
			t.Fatalf("checks exited %d: %s %s", code, out, errOut)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("checks printed %q: %v", out, err)
		}
		return got
	})
	// The same sandbox without the allowlist reaches other names directly.
	if err := api("PUT", "/v1/sandboxes/"+id+"/network", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	out, _, _ := execIn(t, id, "python3", "-c", checkPy, caPEM(), checksJSON([]domainCheck{{name: "other", target: otherName, port: 80, host: otherName}}))
	if !strings.Contains(out, "hello from "+otherAddr) {
		t.Errorf("after the allowlist was lifted, %s: %s", otherName, out)
	}
}

// TestDomainAllowlistFunction: the same for a function's container.
func TestDomainAllowlistFunction(t *testing.T) {
	needGust(t)
	fnID := publishChecker(t, map[string]any{"name": "check_all", "outbound_domain_allowlist": domainAllowlist})
	verifyDomainChecks(t, domainChecks, func(ca, checks string) map[string]string {
		return callChecker(t, fnID, ca, checks)
	})
}

// publishChecker publishes checkPy's check_all as a function with spec, and returns its id.
func publishChecker(t *testing.T, spec map[string]any) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "netcheck.py", Mode: 0o644, Size: int64(len(checkPy))})
	tw.Write([]byte(checkPy))
	tw.Close()
	req, _ := http.NewRequest("POST", gust.url+"/v1/blobs", &buf)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var blob struct {
		Blob string `json:"blob"`
	}
	json.NewDecoder(resp.Body).Decode(&blob)
	resp.Body.Close()
	spec["image_id"] = gust.imageID
	var app struct {
		AppID     string            `json:"app_id"`
		Functions map[string]string `json:"functions"`
	}
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "netcheck", "mode": "ephemeral",
		"code": map[string]string{"blob": blob.Blob, "module": "netcheck"}, "functions": []map[string]any{spec}}, &app); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })
	return app.Functions[spec["name"].(string)]
}

// callChecker calls check_all(ca, checks) and returns its result.
func callChecker(t *testing.T, fnID, ca, checks string) map[string]string {
	t.Helper()
	args, _ := json.Marshal(map[string]any{"args": []any{ca, checks}, "kwargs": map[string]any{}})
	body, _ := json.Marshal(map[string]any{"kind": "remote", "stream": true,
		"inputs": []map[string]any{{"args": base64.StdEncoding.EncodeToString(args), "format": "json"}}})
	req, _ := http.NewRequest("POST", gust.url+"/v1/functions/"+fnID+"/calls", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("call: HTTP %d: %s", resp.StatusCode, b.String())
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var line struct {
			Output *struct {
				Status string `json:"status"`
				Data   string `json:"data"`
				Error  string `json:"error"`
			} `json:"output"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Output == nil {
			continue
		}
		if line.Output.Status != "success" {
			t.Fatalf("check_all failed: %s", line.Output.Error)
		}
		b, _ := base64.StdEncoding.DecodeString(line.Output.Data)
		var got map[string]string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("check_all returned %q: %v", b, err)
		}
		return got
	}
	t.Fatal("the call's stream ended without an output")
	return nil
}

// keepAlivePy holds one HTTP/1.1 connection to a name open: it sends a request, writes the
// answer's status to /tmp/ka1, waits for /tmp/ka-go, sends a second request on the same
// connection and writes what came of it to /tmp/ka2.
const keepAlivePy = `
import os, socket, sys, time
name = sys.argv[1]
s = socket.create_connection((name, 80), timeout=20)
def get():
    s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(4096)
        if not b:
            raise EOFError("connection closed")
        data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < n:
        rest += s.recv(4096)
    return head.split(b"\r\n")[0].decode()
open("/tmp/ka1", "w").write(get())
while not os.path.exists("/tmp/ka-go"):
    time.sleep(0.05)
try:
    r = get()
except Exception as e:
    r = "%s %s" % (type(e).__name__, e)
open("/tmp/ka2", "w").write(r)
`

// waitFile waits for a file in the sandbox and returns its content.
func waitFile(t *testing.T, id, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if out, _, code := execIn(t, id, "cat", path); code == 0 {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not appear in the sandbox", path)
	return ""
}

// TestDomainAllowlistReplaced: replacing the policy of a running sandbox ends a proxied
// connection to a name the new policy leaves out, without waiting for the client to reconnect.
func TestDomainAllowlistReplaced(t *testing.T) {
	needGust(t)
	id := newSandbox(t, map[string]any{"outbound_domain_allowlist": domainAllowlist})
	execIn(t, id, "sh", "-c", "python3 -c '"+strings.ReplaceAll(keepAlivePy, "'", `'\''`)+"' "+webName+" >/tmp/ka.log 2>&1 &")
	if got := waitFile(t, id, "/tmp/ka1"); !strings.Contains(got, "200") {
		t.Fatalf("the first request on the kept-alive connection: %q", got)
	}
	if err := api("PUT", "/v1/sandboxes/"+id+"/network", map[string]any{"outbound_domain_allowlist": []string{otherName}}, nil); err != nil {
		t.Fatal(err)
	}
	execIn(t, id, "touch", "/tmp/ka-go")
	if got := waitFile(t, id, "/tmp/ka2"); strings.Contains(got, "200") {
		t.Fatalf("after the policy dropped %s, the open connection still answered: %q", webName, got)
	}
}
