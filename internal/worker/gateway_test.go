package worker

import (
	"net/netip"
	"testing"

	"github.com/gust-run/gust/internal/network"
)

func TestEgressLookup(t *testing.T) {
	policies := map[string]network.Policy{
		"10.88.0.2": {},
		"10.88.0.3": {Block: true},
		"10.88.0.4": {Allowlisted: true, CIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		"10.88.0.5": {Allowlisted: true, Domains: []string{"pypi.org", "*.github.com"}},
		"10.88.0.6": {Allowlisted: true, Domains: []string{"bad entry"}},
		"10.88.0.7": {Allowlisted: true, Domains: []string{"10.0.0.1", "pypi.org"}},
	}
	lookup := egressLookup(func(src netip.Addr) (network.Policy, bool) {
		p, ok := policies[src.String()]
		return p, ok
	}, t.Logf)
	for _, tc := range []struct {
		src        string
		ok         bool
		restricted bool
		allows     string // a name the container may resolve, or "" for none tried
		refuses    string
	}{
		{"10.88.0.1", false, false, "", ""},
		{"10.88.0.2", true, false, "anything.example", ""},
		{"10.88.0.3", false, false, "", ""},
		{"10.88.0.4", true, false, "anything.example", ""},
		{"10.88.0.5", true, true, "api.github.com", "example.com"},
		{"10.88.0.6", true, true, "", "pypi.org"},
		{"10.88.0.7", true, true, "pypi.org", "10.0.0.1"},
	} {
		c, ok := lookup(netip.MustParseAddr(tc.src))
		if ok != tc.ok || c.Restricted != tc.restricted {
			t.Errorf("%s: ok %v restricted %v, want %v %v", tc.src, ok, c.Restricted, tc.ok, tc.restricted)
			continue
		}
		if tc.allows != "" && c.Restricted && !c.Domains.AllowsName(tc.allows) {
			t.Errorf("%s: %s refused", tc.src, tc.allows)
		}
		if tc.refuses != "" && c.Domains.AllowsName(tc.refuses) {
			t.Errorf("%s: %s allowed", tc.src, tc.refuses)
		}
	}
}
