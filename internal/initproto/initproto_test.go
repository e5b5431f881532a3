package initproto

import (
	"bytes"
	"io"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte("x"), 100<<10)
	if err := w.Write(Stdout, 7, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Stderr, 7, big); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteJSON(Exit, 7, ExitInfo{ExitCode: 3}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	for _, want := range []struct {
		t   Type
		len int
	}{{Stdout, 5}, {Stderr, len(big)}, {Exit, -1}} {
		f, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != want.t || f.Channel != 7 || (want.len >= 0 && len(f.Payload) != want.len) {
			t.Fatalf("frame %+v", f.Type)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestPackUnpack(t *testing.T) {
	p, err := Pack(FileRequest{Op: OpWrite, Path: "/a"}, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	var req FileRequest
	data, err := Unpack(p, &req)
	if err != nil || req.Path != "/a" || string(data) != "data" {
		t.Fatalf("%+v %q %v", req, data, err)
	}
	if _, err := Unpack([]byte{0, 0, 1, 0}, &req); err == nil {
		t.Fatal("short payload accepted")
	}
}

func TestOversizeFrameRefused(t *testing.T) {
	hdr := []byte{byte(Stdout), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}
	if _, err := NewReader(bytes.NewReader(hdr)).Read(); err == nil {
		t.Fatal("oversize frame accepted")
	}
}
