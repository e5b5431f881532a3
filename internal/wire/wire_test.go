package wire

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1.5", 1500 * time.Millisecond, true},
		{"300", 300 * time.Second, true},
		{"0", 0, true},
		{"null", 0, true},
		{`"soon"`, 0, false},
		{"1e400", 0, false},
		{"1e300", 0, false},
	} {
		var d Duration
		err := json.Unmarshal([]byte(tc.in), &d)
		if (err == nil) != tc.ok || (tc.ok && d.D() != tc.want) {
			t.Errorf("%s: %v %v, want %v (ok %v)", tc.in, d.D(), err, tc.want, tc.ok)
		}
	}
	b, err := json.Marshal(struct{ T Duration }{Seconds(2.25)})
	if err != nil || string(b) != `{"T":2.25}` {
		t.Fatalf("%s %v", b, err)
	}
}
