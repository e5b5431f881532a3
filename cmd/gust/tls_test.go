package main

import (
	"net"
	"os"
	"testing"
)

// A server listening on every address is dialled at loopback, and shown to remote workers by
// this machine's name; one on a given address keeps it.
func TestDialableAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080":   "127.0.0.1:8080",
		"[::]:8080":      "127.0.0.1:8080",
		"127.0.0.1:8080": "127.0.0.1:8080",
		"10.1.2.3:443":   "10.1.2.3:443",
		"[::1]:9":        "[::1]:9",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := dialableAddr(a); got != want {
			t.Errorf("dialableAddr(%s) = %s, want %s", in, got, want)
		}
	}
	host, _ := os.Hostname()
	if got := remoteURL("https://127.0.0.1:8080", "0.0.0.0:8080"); host != "" && got != "https://"+host+":8080" {
		t.Errorf("remoteURL for 0.0.0.0: %s", got)
	}
	if got := remoteURL("https://127.0.0.1:8080", ":8080"); host != "" && got != "https://"+host+":8080" {
		t.Errorf("remoteURL for :8080: %s", got)
	}
	if got := remoteURL("http://127.0.0.1:8080", "127.0.0.1:8080"); got != "http://127.0.0.1:8080" {
		t.Errorf("remoteURL for loopback: %s", got)
	}
}
