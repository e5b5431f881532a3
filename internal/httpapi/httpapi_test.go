package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestDecodeJSON(t *testing.T) {
	const max = 64
	pad := func(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }
	tests := []struct {
		name     string
		body     string
		chunked  bool // no Content-Length: the limit is found while reading
		optional bool
		kind     error // nil: decoded
		says     string
	}{
		{"object", `{"name":"a"}`, false, false, nil, ""},
		{"trailing space", "{\"name\":\"a\"} \n", false, false, nil, ""},
		{"exactly the limit", pad(`{"name":"a"}`, max), false, false, nil, ""},
		{"one byte over", pad(`{"name":"a"}`, max+1), false, false, errdefs.ErrTooLarge, "64 B limit"},
		{"one byte over, chunked", pad(`{"name":"a"}`, max+1), true, false, errdefs.ErrTooLarge, "64 B limit"},
		{"over inside the value, chunked", `{"name":"` + strings.Repeat("a", max) + `"}`, true, false, errdefs.ErrTooLarge, "blobs"},
		{"empty", ``, false, false, errdefs.ErrInvalid, "empty"},
		{"empty, optional", ` `, false, true, nil, ""},
		{"two objects", `{}{}`, false, false, errdefs.ErrInvalid, "after the JSON object"},
		{"two objects, optional", `{}{}`, false, true, errdefs.ErrInvalid, "after the JSON object"},
		{"garbage after", `{} x`, false, false, errdefs.ErrInvalid, "after the JSON object"},
		{"not JSON", `{nope`, false, false, errdefs.ErrInvalid, "not valid JSON"},
		{"unknown field", `{"nmae":"a"}`, false, false, errdefs.ErrInvalid, "nmae"},
		{"invalid UTF-8", "{\"name\":\"a\xffb\"}", false, false, errdefs.ErrInvalid, "UTF-8"},
		{"invalid UTF-8, optional", "{\"name\":\"a\xc3\"}", false, true, errdefs.ErrInvalid, "UTF-8"},
		{"invalid UTF-8 after the value", "{\"name\":\"a\"}\xff", false, false, errdefs.ErrInvalid, ""},
		{"multi-byte UTF-8", `{"name":"日本語 ✓"}`, false, false, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = iotest.OneByteReader(body) // and no length: httptest sets none for it
			}
			r := httptest.NewRequest("POST", "/", body)
			if tt.chunked {
				r.ContentLength = -1
			}
			var v struct {
				Name string `json:"name"`
			}
			var err error
			if tt.optional {
				err = DecodeOptionalJSON(r, &v, max)
			} else {
				err = DecodeJSON(r, &v, max)
			}
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want a %v error saying %q", err, tt.kind, tt.says)
			}
		})
	}
}

// A body one byte over the limit gets a 413 that says the limit, as WriteError writes it.
func TestDecodeJSONTooLargeStatus(t *testing.T) {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(bytes.Repeat([]byte(" "), 2<<20+1)))
	rec := httptest.NewRecorder()
	WriteError(rec, DecodeJSON(r, &struct{}{}, 2<<20))
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), `"kind":"too_large"`) ||
		!strings.Contains(rec.Body.String(), "2 MiB") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

// The UTF-8 check holds across reads that split a character.
func TestUTF8Reader(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"plain", true}, {"日本語 ✓ 𝄞", true}, {"", true},
		{"a\xff", false}, {"\xe6\x97", false}, {"ab\xe6\x97c", false}, {"\xed\xa0\x80", false}, // a surrogate
	} {
		_, err := io.ReadAll(&utf8Reader{r: iotest.OneByteReader(strings.NewReader(tt.in))})
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v, want ok=%v", tt.in, err, tt.ok)
		}
		_, err = io.ReadAll(&utf8Reader{r: strings.NewReader(tt.in)})
		if (err == nil) != tt.ok {
			t.Errorf("%q in one read: err %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

// Large bodies are decoded a few at a time: one that would take the budget past its size waits
// until another is done, and gives up when its client goes away.
func TestDecodeBudget(t *testing.T) {
	old := decoding
	decoding = newBudget(3 << 20)
	defer func() { decoding = old }()

	// The first large body holds 2 MiB of the budget while its reader is stalled.
	pr, pw := io.Pipe()
	first := httptest.NewRequest("POST", "/", pr)
	first.ContentLength = 2 << 20
	done := make(chan error, 1)
	go func() { done <- DecodeJSON(first, &struct{}{}, 4<<20) }()
	if _, err := pw.Write([]byte("{")); err != nil { // the decode has begun, holding its share
		t.Fatal(err)
	}

	// A second one of 2 MiB must wait; its client gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	second := httptest.NewRequest("POST", "/", bytes.NewReader(bytes.Repeat([]byte(" "), 2<<20))).WithContext(ctx)
	if err := DecodeJSON(second, &struct{}{}, 4<<20); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a second large body was decoded beside the first: %v", err)
	}
	// Small bodies never wait.
	small := httptest.NewRequest("POST", "/", strings.NewReader(`{}`))
	if err := DecodeJSON(small, &struct{}{}, 4<<20); err != nil {
		t.Fatal(err)
	}
	// Once the first is done, the second goes through.
	pw.Write([]byte("}"))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	second = httptest.NewRequest("POST", "/", strings.NewReader(`{}`+strings.Repeat(" ", 2<<20)))
	if err := DecodeJSON(second, &struct{}{}, 4<<20); err != nil {
		t.Fatal(err)
	}
}
