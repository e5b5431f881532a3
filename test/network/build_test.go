package network

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// buildLogs builds an image from spec and returns its log lines and error, if any.
func buildLogs(t *testing.T, spec map[string]any) (logs []string, errMsg string) {
	t.Helper()
	b, _ := json.Marshal(spec)
	req, _ := http.NewRequest("POST", gust.url+"/v1/images", strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Log   *string                   `json:"log"`
			Error *struct{ Message string } `json:"error"`
		}
		json.Unmarshal(sc.Bytes(), &line)
		switch {
		case line.Log != nil:
			logs = append(logs, *line.Log)
		case line.Error != nil:
			errMsg = line.Error.Message
		}
	}
	return logs, errMsg
}

// TestBuildNetwork: an image build's step runs on the containers' bridge with the default
// policy: it reaches the public web and the operator's mirror on a private address
// (--build-mirrors), and none of the always-denied addresses (their listeners see nothing);
// it is told about the gateway's resolver and has no proxy variables.
func TestBuildNetwork(t *testing.T) {
	needGust(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(gust.url, "http://"), ":")
	mirror, web := mirrorAddr+":80", webAddr+":80"
	denied := []string{metaAddr + ":80", hostUplink + ":" + port, "10.88.0.1:" + port}
	for _, a := range privateAddrs {
		denied = append(denied, a+":80")
	}
	before := map[string]int{}
	for _, d := range append(denied, mirror, web) {
		before[d] = connsTo(d)
	}
	script := `
import os, socket, sys, urllib.request
print("RESULT proxy", os.environ.get("http_proxy", "none"))
print("RESULT resolver", [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")])
for t in sys.argv[1:]:
    h, p = t.rsplit(":", 1)
    try:
        socket.create_connection((h, int(p)), timeout=2).close()
        print("RESULT", t, "OK")
    except OSError as e:
        print("RESULT", t, "FAIL", e)
print("RESULT get-mirror", urllib.request.urlopen("http://` + mirror + `/", timeout=10).read().decode())
`
	nonce := fmt.Sprint(time.Now().UnixNano()) // no cached layer
	cmd := fmt.Sprintf("python3 -c '%s' %s %s %s # %s", script, mirror, web, strings.Join(denied, " "), nonce)
	logs, errMsg := buildLogs(t, map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{cmd}},
	}})
	all := strings.Join(logs, "\n")
	if errMsg != "" {
		t.Fatalf("build: %s\n%s", errMsg, all)
	}
	results := map[string]string{}
	for _, l := range strings.Split(all, "\n") {
		if f := strings.SplitN(strings.TrimSpace(l), " ", 3); len(f) == 3 && f[0] == "RESULT" {
			results[f[1]] = f[2]
		}
	}
	t.Logf("results: %q", results)
	if results["proxy"] != "none" {
		t.Errorf("the build has http_proxy=%q: it should be on the bridge, not behind the egress proxy", results["proxy"])
	}
	if results["resolver"] != "['10.88.0.1']" {
		t.Errorf("the build's resolvers: %s, want the gateway's", results["resolver"])
	}
	for _, a := range []string{mirror, web} {
		if results[a] != "OK" || connsTo(a) == before[a] {
			t.Errorf("the build did not reach %s (%q)", a, results[a])
		}
	}
	if !strings.HasPrefix(results["get-mirror"], "hello from "+mirror) {
		t.Errorf("GET from the mirror: %q", results["get-mirror"])
	}
	for _, d := range denied {
		if !strings.HasPrefix(results[d], "FAIL") {
			t.Errorf("the build reached %s (%q), which must be denied", d, results[d])
		}
		if connsTo(d) != before[d] {
			t.Errorf("the listener on %s saw a connection from the build", d)
		}
	}
	// A sandbox is still denied the build's mirror.
	sb := newSandbox(t, nil)
	if got := probe(t, sb, mirror); got[mirror] {
		t.Errorf("a sandbox reached the build mirror %s", mirror)
	}
}
