package gust

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Pickles that CPython's pickle.dumps(v, protocol=4) wrote, and repr(v).
var pickleVectors = []struct{ hex, repr string }{
	{"80049505000000000000008c0161942e", `'a'`},
	{"80049509000000000000008c0568656c6c6f942e", `'hello'`},
	{"80049504000000000000008c00942e", `''`},
	{"8004953301000000000000582c010000787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878942e", `'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'`},
	{"80049506000000000000008c02c3a9942e", `'é'`},
	{"80044b012e", `1`},
	{"80049506000000000000004afbffffff2e", `-5`},
	{"80049504000000000000004d2c012e", `300`},
	{"80049506000000000000004a701101002e", `70000`},
	{"80049506000000000000004a90eefeff2e", `-70000`},
	{"8004950c000000000000008a090000000000000000402e", `1180591620717411303424`},
	{"8004950a00000000000000473ff80000000000002e", `1.5`},
	{"80044e2e", `None`},
	{"8004882e", `True`},
	{"8004892e", `False`},
	{"80049507000000000000004303616200942e", `b'ab\x00'`},
	{"8004950b000000000000005d94284b018c016194652e", `[1, 'a']`},
	{"80049505000000000000004b0185942e", `(1,)`},
	{"80049509000000000000004b014b024b0387942e", `(1, 2, 3)`},
	{"8004950c00000000000000284b014b024b034b0474942e", `(1, 2, 3, 4)`},
	{"80049516000000000000007d94288c016b945d94284b014b02658c017a944e752e", `{'k': [1, 2], 'z': None}`},
	{"80049509000000000000008f94284b014b02902e", `{1, 2}`},
	{"8004950600000000000000284b0391942e", `frozenset({3})`},
	{"8004950f000000000000005d94285d944b01615d944b0261652e", `[[1], [2]]`},
	{"8004951c000000000000007d948c066e6573746564947d948c0161944b018c016294869473732e", `{'nested': {'a': (1, 'b')}}`},
}

func TestUnpickle(t *testing.T) {
	for _, v := range pickleVectors {
		b, _ := hex.DecodeString(v.hex)
		got, err := Unpickle(b)
		if err != nil {
			t.Errorf("%s: %v", v.repr, err)
			continue
		}
		if r := PyRepr(got); r != v.repr {
			t.Errorf("repr: got %s, want %s", r, v.repr)
		}
	}
	// A class instance needs Python.
	b, _ := hex.DecodeString("80049515000000000000008c085f5f6d61696e5f5f948c01439493942981942e")
	if _, err := Unpickle(b); !errors.Is(err, ErrUnpicklable) {
		t.Errorf("an instance: want ErrUnpicklable, got %v", err)
	}
	for _, bad := range []string{"", "8004", "80049505000000000000008c05"} {
		b, _ := hex.DecodeString(bad)
		if _, err := Unpickle(b); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPickleString(t *testing.T) {
	for _, v := range pickleVectors {
		if !strings.HasPrefix(v.repr, "'") {
			continue
		}
		b, _ := hex.DecodeString(v.hex)
		s, _ := Unpickle(b)
		if got := hex.EncodeToString(PickleString(s.(string))); got != v.hex {
			t.Errorf("PickleString(%s) = %s, want %s (what Python writes)", v.repr, got, v.hex)
		}
	}
}
