// Package lifecycle is how gust writes down a state machine: a typed state, the moves allowed
// between states in one table, and one function that makes a move or refuses it with an
// error. Each lifecycle (a sandbox's, an input's, a function container's, a worker's box, a
// runner's) declares its Machine beside its state type; every change of state goes through
// it. It imports nothing of gust's but errdefs.
package lifecycle

import (
	"fmt"
	"slices"

	"github.com/gust-run/gust/internal/errdefs"
)

// Machine is a lifecycle: which states may follow which.
type Machine[S ~string] struct {
	name string
	next map[S][]S
}

// New declares a machine. next lists, for each state, the states it may move to; a state
// with no entry is terminal.
func New[S ~string](name string, next map[S][]S) *Machine[S] {
	return &Machine[S]{name: name, next: next}
}

// Can reports whether from may move to to.
func (m *Machine[S]) Can(from, to S) bool { return slices.Contains(m.next[from], to) }

// Terminal reports whether nothing leaves s.
func (m *Machine[S]) Terminal(s S) bool { return len(m.next[s]) == 0 }

// Move sets *cur to to if the machine allows it, and otherwise leaves it and returns an
// error of kind conflict naming the illegal move.
func (m *Machine[S]) Move(cur *S, to S) error {
	if !m.Can(*cur, to) {
		return fmt.Errorf("%s cannot go from %q to %q: %w", m.name, *cur, to, errdefs.ErrConflict)
	}
	*cur = to
	return nil
}

// States lists every state the machine names, for tests that walk all pairs.
func (m *Machine[S]) States() []S {
	var out []S
	add := func(s S) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for from, tos := range m.next {
		add(from)
		for _, to := range tos {
			add(to)
		}
	}
	slices.Sort(out)
	return out
}
