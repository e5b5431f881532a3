package container

import (
	"errors"
	"reflect"
	"testing"
)

// The undo stack of a failed start runs every step, newest first, even after one fails, and
// reports each failure.
func TestCleanupStack(t *testing.T) {
	var order []string
	errMount := errors.New("mount busy")
	var s cleanupStack
	s.push(func() error { order = append(order, "bundle"); return nil })
	s.push(func() error { order = append(order, "mount"); return errMount })
	s.push(func() error { order = append(order, "pipes"); return nil })
	err := s.run()
	if want := []string{"pipes", "mount", "bundle"}; !reflect.DeepEqual(order, want) {
		t.Errorf("undo order %v, want %v", order, want)
	}
	if !errors.Is(err, errMount) {
		t.Errorf("run() = %v, want it to carry %v", err, errMount)
	}
	var empty cleanupStack
	if err := empty.run(); err != nil {
		t.Errorf("an empty stack: %v", err)
	}
}

func TestNotExist(t *testing.T) {
	for out, want := range map[string]bool{
		`container "x" does not exist`: true,
		"sandbox x does not exist":     true,
		"permission denied":            false,
		"":                             false,
	} {
		if got := notExist([]byte(out)); got != want {
			t.Errorf("notExist(%q) = %v, want %v", out, got, want)
		}
	}
}
