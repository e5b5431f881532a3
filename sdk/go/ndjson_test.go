package gust

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 1<<20) // far above the reader's 64 KiB buffer
	type obj struct {
		A string `json:"a"`
	}
	tests := []struct {
		name    string
		in      string
		want    []string
		wantEnd error
	}{
		{"plain", "{\"a\":\"1\"}\n{\"a\":\"2\"}\n", []string{"1", "2"}, io.EOF},
		{"blank lines and CRLF", "\n{\"a\":\"1\"}\r\n\n  \n{\"a\":\"2\"}\n", []string{"1", "2"}, io.EOF},
		{"long line", "{\"a\":\"" + long + "\"}\n{\"a\":\"2\"}\n", []string{long, "2"}, io.EOF},
		{"last line without newline", "{\"a\":\"1\"}\n{\"a\":\"2\"}", []string{"1", "2"}, io.EOF},
		{"cut inside a line", "{\"a\":\"1\"}\n{\"a\":", []string{"1"}, io.ErrUnexpectedEOF},
		{"empty", "", nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := newLineReader(strings.NewReader(tt.in))
			var got []string
			var err error
			for {
				var o obj
				if err = lr.next(&o); err != nil {
					break
				}
				got = append(got, o.A)
			}
			if !errors.Is(err, tt.wantEnd) {
				t.Errorf("ended with %v, want %v", err, tt.wantEnd)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d objects, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("object %d differs (len %d vs %d)", i, len(got[i]), len(tt.want[i]))
				}
			}
		})
	}
}

func TestLineReaderBadJSON(t *testing.T) {
	lr := newLineReader(strings.NewReader("not json\n"))
	var v map[string]any
	if err := lr.next(&v); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("error %v", err)
	}
}
