package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestCheckPythonVersion(t *testing.T) {
	for _, v := range []string{"", "3.11", "3.13"} {
		if err := CheckPythonVersion(v); err != nil {
			t.Errorf("CheckPythonVersion(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"3.12", "3.10", "2.7", "3.11.4", "latest"} {
		err := CheckPythonVersion(v)
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("CheckPythonVersion(%q) = %v, want invalid", v, err)
		}
		for _, want := range []string{"3.11 (Debian bookworm)", "3.13 (Debian trixie)"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal of %q does not offer %q: %v", v, want, err)
			}
		}
	}
}

func TestBaseHash(t *testing.T) {
	if BaseHash("") != DebianSlimHash() || BaseHash("3.11") != DebianSlimHash() {
		t.Fatal("the default base must keep its hash (cached layers stay valid)")
	}
	if BaseHash("3.13") == DebianSlimHash() {
		t.Fatal("3.13 must be a base of its own")
	}
	if got := debootstrapArgs(pythonReleases["3.13"], "/x"); got[2] != "trixie" {
		t.Fatalf("3.13 debootstraps %v, want trixie", got)
	}
}
