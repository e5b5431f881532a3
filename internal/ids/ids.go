// Package ids makes the IDs of gust's objects: a kind prefix and 20 random characters
// ("sb-k3…"). Every package that creates an object asks here; it imports nothing of gust's.
package ids

import (
	"crypto/rand"
	"fmt"
)

// Kind is an ID's prefix; it tells what the ID names.
type Kind string

// The kinds of object gust names.
const (
	App          Kind = "ap"
	Sandbox      Kind = "sb" // sandboxes and function containers
	Exec         Kind = "ex"
	Image        Kind = "im"
	Snapshot     Kind = "snap" // a snapshot layer's directory
	Function     Kind = "fu"
	FunctionCall Kind = "fc"
	Input        Kind = "in"
	Worker       Kind = "wk"
	Secret       Kind = "st"
	Warm         Kind = "warm" // a warm-pool container before a sandbox takes it
	Token        Kind = "tk"
	Workspace    Kind = "ws"
	Budget       Kind = "bg" // a monthly spending limit (internal/budget)
	Dict         Kind = "di" // Modal's prefixes for Dicts and Queues
	Queue        Kind = "qu"
	Volume       Kind = "vo" // Modal's prefix for Volumes
)

// New returns a new ID of the kind.
func New(k Kind) string {
	return fmt.Sprintf("%s-%s", k, Random(20))
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// Random returns n random lowercase letters and digits.
func Random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
