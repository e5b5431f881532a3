package network

import (
	"net/url"
	"strings"
	"testing"
)

// gateway returns the bridge's address as a sandbox sees it (its default route).
func gateway(t *testing.T, id string) string {
	t.Helper()
	out, _, code := execIn(t, id, "python3", "-c", `
import socket, struct
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        print(socket.inet_ntoa(struct.pack("<L", int(f[2], 16))))
`)
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("no default route in the sandbox: %q", out)
	}
	return strings.TrimSpace(out)
}

// sandboxAddr returns a sandbox's own address on eth0.
func sandboxAddr(t *testing.T, id string) string {
	t.Helper()
	out, _, code := execIn(t, id, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))
print(s.getsockname()[0])
`)
	if code != 0 {
		t.Fatalf("no address in the sandbox: %q", out)
	}
	return strings.TrimSpace(out)
}

// alwaysDenied are targets no policy reaches: metadata, private ranges, the host's own ports on
// its uplink and on the gateway, and (added by the caller) another sandbox.
func alwaysDenied(t *testing.T, gw string) []string {
	u, _ := url.Parse(gust.url)
	port := u.Port()
	out := []string{metaAddr + ":80", hostUplink + ":" + port, gw + ":" + port, "127.0.0.1:" + port}
	for _, a := range privateAddrs {
		out = append(out, a+":80")
	}
	return out
}

// isolations runs f once per runtime: gVisor sandboxes join the same namespace (runsc's
// netstack in it), so the same rules must hold for them.
func isolations(t *testing.T, f func(t *testing.T, iso string)) {
	for _, iso := range []string{"runc", "gvisor"} {
		t.Run(iso, func(t *testing.T) { f(t, iso) })
	}
}

// with is m (copied) with the isolation set.
func with(m map[string]any, iso string) map[string]any {
	out := map[string]any{"isolation": iso}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestPolicies(t *testing.T) { isolations(t, testPolicies) }

func testPolicies(t *testing.T, iso string) {
	needGust(t)
	// A listener in another sandbox, which no sandbox reaches.
	peer := newSandbox(t, nil)
	execIn(t, peer, "sh", "-c", "python3 -m http.server 8080 >/dev/null 2>&1 &")
	peerAddr := sandboxAddr(t, peer) + ":8080"

	web, web443, other := webAddr+":80", webAddr+":443", otherAddr+":80"
	for _, tc := range []struct {
		name    string
		create  map[string]any
		allowed []string
		denied  []string
	}{
		{"open", nil, []string{web, web443, other}, nil},
		{"block_network", map[string]any{"block_network": true}, nil, []string{web, web443, other}},
		{"outbound_cidr_allowlist", map[string]any{"outbound_cidr_allowlist": []string{webAddr + "/32"}}, []string{web, web443}, []string{other}},
		{"cidr_allowlist (older name)", map[string]any{"cidr_allowlist": []string{"203.0.113.0/24"}}, []string{web}, []string{other}},
		// A private range in an allowlist is still denied.
		{"allowlist naming a private range", map[string]any{"outbound_cidr_allowlist": []string{"10.0.0.0/8", webAddr}}, []string{web}, []string{other, privateAddrs[0] + ":80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newSandbox(t, with(tc.create, iso))
			var targets []string
			targets = append(targets, tc.allowed...)
			targets = append(targets, tc.denied...)
			gw := "10.88.0.1"
			if tc.create["block_network"] != true {
				gw = gateway(t, id)
			}
			denied := append(append(tc.denied, alwaysDenied(t, gw)...), peerAddr)
			targets = append(targets, alwaysDenied(t, gw)...)
			targets = append(targets, peerAddr)
			before := map[string]int{}
			for _, d := range denied {
				before[d] = connsTo(d)
			}
			got := probe(t, id, targets...)
			for _, a := range tc.allowed {
				if !got[a] {
					t.Errorf("%s: cannot reach %s, which the policy allows", tc.name, a)
				}
			}
			for _, d := range denied {
				if got[d] {
					t.Errorf("%s: reached %s, which must be denied", tc.name, d)
				}
				if connsTo(d) != before[d] {
					t.Errorf("%s: the listener on %s saw a connection", tc.name, d)
				}
			}
		})
	}
}

func TestRefusedCombinations(t *testing.T) {
	needGust(t)
	for _, body := range []map[string]any{
		{"block_network": true, "outbound_cidr_allowlist": []string{"203.0.113.0/24"}},
		{"block_network": true, "cidr_allowlist": []string{"203.0.113.0/24"}},
		{"block_network": true, "outbound_domain_allowlist": []string{"pypi.org"}},
		{"outbound_cidr_allowlist": []string{"not-a-cidr"}},
		{"outbound_cidr_allowlist": []string{"2001:db8::/32"}},
		{"outbound_domain_allowlist": []string{"bad domain"}},
		{"outbound_cidr_allowlist": []string{"1.2.3.0/24"}, "cidr_allowlist": []string{"1.2.3.0/24"}},
	} {
		body["app_id"], body["image_id"] = gust.appID, gust.imageID
		err := api("POST", "/v1/sandboxes", body, nil)
		ae, ok := err.(*apiError)
		if !ok || ae.Status != 400 {
			t.Errorf("create %v: got %v, want a 400", body, err)
		}
	}
}

func TestReplacePolicy(t *testing.T) { isolations(t, testReplacePolicy) }

func testReplacePolicy(t *testing.T, iso string) {
	needGust(t)
	id := newSandbox(t, with(nil, iso))
	web, other := webAddr+":80", otherAddr+":80"
	steps := []struct {
		policy  map[string]any
		allowed []string
		denied  []string
	}{
		{map[string]any{"block_network": true}, nil, []string{web, other}},
		{map[string]any{"outbound_cidr_allowlist": []string{webAddr}}, []string{web}, []string{other}},
		{map[string]any{}, []string{web, other}, nil},
	}
	for i, s := range steps {
		var got map[string]any
		if err := api("PUT", "/v1/sandboxes/"+id+"/network", s.policy, &got); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		res := probe(t, id, append(append([]string{}, s.allowed...), s.denied...)...)
		for _, a := range s.allowed {
			if !res[a] {
				t.Errorf("step %d (%v): cannot reach %s", i, s.policy, a)
			}
		}
		for _, d := range s.denied {
			if res[d] {
				t.Errorf("step %d (%v): reached %s", i, s.policy, d)
			}
		}
	}
	// The record shows the policy in force.
	var sb map[string]any
	if err := api("GET", "/v1/sandboxes/"+id, nil, &sb); err != nil {
		t.Fatal(err)
	}
	if sb["block_network"] != false || sb["outbound_cidr_allowlist"] != nil {
		t.Errorf("the sandbox's record after the last replacement: %v", sb)
	}
	if err := api("PUT", "/v1/sandboxes/"+id+"/network", map[string]any{"block_network": true, "cidr_allowlist": []string{"1.2.3.4"}}, nil); err == nil {
		t.Error("block_network with an allowlist was accepted")
	}
	// A sandbox created with block_network has no interface to open.
	blocked := newSandbox(t, with(map[string]any{"block_network": true}, iso))
	err := api("PUT", "/v1/sandboxes/"+blocked+"/network", map[string]any{}, nil)
	if ae, ok := err.(*apiError); !ok || ae.Status != 409 {
		t.Errorf("opening a block_network sandbox: %v, want a 409", err)
	}
}

// TestNoLeftoversAfterCycles creates and terminates sandboxes and checks that nothing of
// their networks stays: veths and nftables chains.
func TestNoLeftoversAfterCycles(t *testing.T) {
	needGust(t)
	before := len(gustVeths())
	for i := 0; i < 20; i++ {
		id := newSandbox(t, map[string]any{"outbound_cidr_allowlist": []string{webAddr}})
		terminate(id)
	}
	after := len(gustVeths())
	// The pool keeps a few namespaces ready; containers must not add to them.
	if after > before+1 {
		t.Errorf("veths: %d before 20 create/terminate cycles, %d after: %v", before, after, gustVeths())
	}
	if chains := containerChains(); chains > after+1 {
		t.Errorf("%d per-container chains for %d veths", chains, after)
	}
}
