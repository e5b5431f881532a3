package egress

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // String(), or the error's text
		bad  bool
	}{
		{[]string{"deb.debian.org", " PyPI.org ", ""}, "deb.debian.org,pypi.org", false},
		{[]string{"mirror.internal:3142", "*.example.com", "10.0.0.5", "[fd00::1]:8080", "::2"}, "mirror.internal:3142,*.example.com,10.0.0.5,[fd00::1]:8080,::2", false},
		{nil, "", false},
		{[]string{"http://deb.debian.org/debian"}, "not a URL", true},
		{[]string{"deb.debian.org:0"}, "1 to 65535", true},
		{[]string{"deb.debian.org:http"}, "1 to 65535", true},
		{[]string{"*"}, "not a host name", true},
		{[]string{"bad_host-.org"}, "not a host name", true},
		{[]string{"a..b"}, "not a host name", true},
	} {
		p, err := ParsePolicy(tc.in)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), Flag) {
				t.Errorf("ParsePolicy(%q) = %v, want an error naming %s and saying %q", tc.in, err, Flag, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if p.String() != tc.want {
			t.Errorf("ParsePolicy(%q) = %q, want %q", tc.in, p.String(), tc.want)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	p, err := ParsePolicy([]string{"deb.debian.org", "mirror.internal:3142", "*.pythonhosted.org", "10.0.0.5", "fd00::1", "deb.debian.org:8080"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		port int
		ok   bool
		why  string // in the refusal
	}{
		{"deb.debian.org", 80, true, ""},
		{"deb.debian.org", 443, true, ""},
		{"DEB.Debian.ORG.", 443, true, ""},
		{"deb.debian.org", 8080, true, ""}, // its own entry
		{"deb.debian.org", 22, false, "port 22 of deb.debian.org is closed"},
		{"deb.debian.org", 0, false, "port 0"},
		{"security.debian.org", 80, false, "security.debian.org is not a package mirror"},
		{"debian.org", 80, false, "not a package mirror"},
		{"evildeb.debian.org", 80, false, "not a package mirror"},
		{"deb.debian.org.evil.com", 80, false, "not a package mirror"},
		{"mirror.internal", 3142, true, ""},
		{"mirror.internal", 80, false, "port 80 of mirror.internal"},
		{"files.pythonhosted.org", 443, true, ""},
		{"a.b.pythonhosted.org", 443, true, ""},
		{"pythonhosted.org", 443, false, "not a package mirror"},
		{"xpythonhosted.org", 443, false, "not a package mirror"},
		{"10.0.0.5", 80, true, ""},
		{"[fd00::1]", 443, true, ""},
		{"fd00:0::1", 443, true, ""},
		{"::ffff:10.0.0.5", 80, true, ""},
		{"127.0.0.1", 7420, false, "not a package mirror"},
		{"169.254.169.254", 80, false, "not a package mirror"},
		{"", 80, false, "not a package mirror"},
	} {
		err := p.Check(tc.host, tc.port)
		if tc.ok != (err == nil) {
			t.Errorf("Check(%q, %d) = %v, want allowed %v", tc.host, tc.port, err, tc.ok)
			continue
		}
		if err != nil {
			var d *DeniedError
			if !errors.As(err, &d) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), Flag) {
				t.Errorf("Check(%q, %d) = %q, want a DeniedError saying %q and naming %s", tc.host, tc.port, err, tc.why, Flag)
			}
		}
	}
	var none Policy
	if err := none.Check("deb.debian.org", 80); err == nil || !strings.Contains(err.Error(), "image builds have no network") {
		t.Errorf("the empty policy: %v", err)
	}
}

func TestCheckAddr(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.80", true},
		{"10.1.2.3", true}, // private mirrors are the operator's to list
		{"2001:db8::1", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"169.254.169.254", false},
		{"::ffff:169.254.169.254", false},
		{"fe80::1", false},
		{"fd00:ec2::254", false},
		{"100.100.100.200", false},
		{"224.0.0.1", false},
		{"192.0.2.2", false}, // this machine
	} {
		err := checkAddr(netip.MustParseAddr(tc.addr), own)
		if tc.ok != (err == nil) {
			t.Errorf("checkAddr(%s) = %v, want allowed %v", tc.addr, err, tc.ok)
		}
	}
}

func TestDefaultHosts(t *testing.T) {
	t.Setenv("GUST_DEBIAN_MIRROR", "http://mirror.example.net:8080/debian")
	p, err := ParsePolicy(DefaultHosts())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org"} {
		if err := p.Check(h, 443); err != nil {
			t.Errorf("default policy refuses %s: %v", h, err)
		}
	}
	if err := p.Check("mirror.example.net", 8080); err != nil {
		t.Errorf("GUST_DEBIAN_MIRROR's host is not allowed: %v", err)
	}
}
