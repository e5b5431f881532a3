package lifecycle

import (
	"errors"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

type state string

func TestMove(t *testing.T) {
	m := New("door", map[state][]state{"closed": {"open", "locked"}, "open": {"closed"}, "locked": {"closed"}})
	for _, tc := range []struct {
		from, to state
		ok       bool
	}{
		{"closed", "open", true},
		{"open", "locked", false},
		{"locked", "closed", true},
		{"open", "open", false},
		{"gone", "open", false},
	} {
		s := tc.from
		err := m.Move(&s, tc.to)
		if tc.ok != (err == nil) {
			t.Errorf("%s → %s: %v", tc.from, tc.to, err)
		}
		if err != nil && (s != tc.from || !errors.Is(err, errdefs.ErrConflict)) {
			t.Errorf("%s → %s: a refused move changed the state to %s or is not a conflict (%v)", tc.from, tc.to, s, err)
		}
	}
	if got := len(m.States()); got != 3 {
		t.Errorf("States() has %d states, want 3", got)
	}
	if m.Terminal("closed") || !m.Terminal("gone") {
		t.Error("Terminal is wrong")
	}
}
