// Package httpapi holds what the server's and the worker's HTTP ends share: JSON and NDJSON
// responses, the error body (an errdefs kind and a message, with the status errdefs.Kind maps
// it to), bearer-token auth, request decoding, and the internal client that gust's peers use to
// call each other. Imported by internal/api, internal/worker, internal/workerproto and
// cmd/gust (its benchmarks).
package httpapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gust-run/gust/internal/errdefs"
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names an error's kind and says what was wrong.
type ErrorDetail struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// WriteJSON writes v with a status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An encoding error here is the client's going away (the values are the API's own): there
	// is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as an API error with the status its kind maps to.
func WriteError(w http.ResponseWriter, err error) {
	kind, status := errdefs.Kind(err)
	WriteJSON(w, status, ErrorBody{ErrorDetail{Kind: kind, Message: err.Error()}})
}

// DecodeJSON reads a JSON body into v: one JSON value and nothing after it, valid UTF-8
// throughout, no unknown fields, at most max bytes (a bigger body is a too_large error that
// says the limit). Large bodies are decoded a few at a time (decoding).
func DecodeJSON(r *http.Request, v any, max int64) error {
	return decodeBody(r, v, max, false)
}

// DecodeOptionalJSON is DecodeJSON for endpoints whose fields are all optional: an empty body
// means the defaults.
func DecodeOptionalJSON(r *http.Request, v any, max int64) error {
	return decodeBody(r, v, max, true)
}

// decoding bounds the bytes of large request bodies being read and decoded at once, so that a
// few large calls cannot take the server's memory (decoding holds a body and what it decodes
// to, several times its size): a large body waits for its turn.
var decoding = newBudget(128 << 20)

// smallBody is the size up to which a body does not wait for the budget: the many small
// requests (worker reports, lookups) are never held behind large ones.
const smallBody = 1 << 20

func decodeBody(r *http.Request, v any, max int64, optional bool) error {
	if r.ContentLength > max {
		return tooLarge(max)
	}
	// A body of unknown length (chunked) may be as large as max.
	if size := r.ContentLength; size > smallBody || size < 0 && max > smallBody {
		if size < 0 {
			size = max
		}
		release, err := decoding.acquire(r.Context(), size)
		if err != nil {
			return err
		}
		defer release()
	}
	dec := json.NewDecoder(&utf8Reader{r: http.MaxBytesReader(nil, r.Body, max)})
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	trailing := false
	if err == nil {
		// One value, then only white space: Token finds the end, or what follows.
		if _, err = dec.Token(); err == io.EOF {
			return nil
		}
		trailing = true
	} else if errors.Is(err, io.EOF) && optional {
		return nil
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return tooLarge(max)
	case errors.Is(err, errInvalidUTF8):
		return errdefs.Invalid("request body is not valid UTF-8; send JSON text in UTF-8 (binary data goes base64-encoded)")
	case trailing:
		return errdefs.Invalid("request body has more after the JSON object; send exactly one JSON object")
	case errors.Is(err, io.EOF):
		return errdefs.Invalid("request body is empty; send a JSON object")
	}
	return errdefs.Invalid("request body is not valid JSON for this endpoint: %v", err)
}

func tooLarge(max int64) error {
	return errdefs.TooLarge("request body is above the %s limit of this endpoint; send large data by reference "+
		"(files as blobs: POST /v1/blobs) or split the request into batches", byteSize(max))
}

// byteSize prints a limit as people write it: 64 MiB, 4 KiB, 100 B.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// errInvalidUTF8 is utf8Reader's error. Go's JSON decoder would turn bytes that are not UTF-8
// into U+FFFD without a word, so a name could be stored as something the client never sent.
var errInvalidUTF8 = errors.New("request body is not valid UTF-8")

// utf8Reader passes r through and fails at the first bytes that are not UTF-8, and at every
// read after: the JSON decoder looks at a read's error only when it needs more, and would
// otherwise miss one that came with the last bytes of a value. A character split between two
// reads is checked once the read after it completes it.
type utf8Reader struct {
	r       io.Reader
	partial []byte // the start of a character that the last read cut off
	err     error
}

func (u *utf8Reader) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	n, err := u.r.Read(p)
	if !u.valid(p[:n], err == io.EOF) {
		u.err = errInvalidUTF8
		return 0, u.err
	}
	return n, err
}

// valid checks chunk, with what the last one cut off before it; at the end nothing may be
// left cut off.
func (u *utf8Reader) valid(chunk []byte, end bool) bool {
	if len(u.partial) > 0 {
		// Complete the cut character with the bytes it needs, at most three.
		need := 0
		for need < len(chunk) && !utf8.FullRune(append(u.partial, chunk[:need]...)) {
			need++
		}
		head := append(u.partial, chunk[:need]...)
		if !utf8.FullRune(head) {
			u.partial = head
			return !end
		}
		if !utf8.Valid(head) {
			return false
		}
		u.partial = nil
		chunk = chunk[need:]
	}
	// Hold back a character cut off at the end.
	cut := len(chunk)
	for i := len(chunk) - 1; i >= 0 && i >= len(chunk)-utf8.UTFMax; i-- {
		if utf8.RuneStart(chunk[i]) {
			if !utf8.FullRune(chunk[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(chunk[:cut]) {
		return false
	}
	u.partial = append(u.partial[:0], chunk[cut:]...)
	return !end || len(u.partial) == 0
}

// budget is a count of bytes that callers take a share of and give back, waiting while the
// rest is too small; first come, first served.
type budget struct {
	mu      sync.Mutex
	free    int64
	size    int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newBudget(size int64) *budget { return &budget{free: size, size: size} }

// acquire takes n bytes (at most the whole budget), waiting until they are free or ctx ends,
// and returns the function that gives them back.
func (b *budget) acquire(ctx context.Context, n int64) (func(), error) {
	n = min(n, b.size)
	release := func() { b.release(n) }
	b.mu.Lock()
	if len(b.waiters) == 0 && b.free >= n {
		b.free -= n
		b.mu.Unlock()
		return release, nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return release, nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.mu.Unlock()
			release()
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			b.grant()
			b.mu.Unlock()
		}
		return nil, errdefs.Unavailable("the request ended while it waited for the server to finish reading other large requests: %v", ctx.Err())
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.free += n
	b.grant()
	b.mu.Unlock()
}

// grant wakes the waiters at the front whose shares are free. Called with mu held.
func (b *budget) grant() {
	for len(b.waiters) > 0 && b.free >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.free -= w.n
		close(w.ready)
	}
}

// Auth wraps h, requiring "Authorization: Bearer <token>".
func Auth(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			WriteError(w, errdefs.WithKind(errdefs.ErrUnauthorized, "missing or wrong bearer token: set GUST_TOKEN or run `gust up`, which writes the client config"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NDJSON writes a stream of JSON lines, flushing each.
type NDJSON struct {
	w   http.ResponseWriter
	f   http.Flusher
	enc *json.Encoder
}

// StartNDJSON sends the headers of a 200 NDJSON stream.
func StartNDJSON(w http.ResponseWriter) *NDJSON {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	n := &NDJSON{w: w, f: f, enc: json.NewEncoder(w)}
	n.Flush()
	return n
}

// Send writes one line and flushes it.
func (n *NDJSON) Send(v any) error {
	if err := n.enc.Encode(v); err != nil {
		return err
	}
	n.Flush()
	return nil
}

// Flush pushes buffered output to the client.
func (n *NDJSON) Flush() {
	if n.f != nil {
		n.f.Flush()
	}
}

// LogWriter turns written text into {"log": line} NDJSON lines.
type LogWriter struct {
	N       *NDJSON
	partial string
}

func (l *LogWriter) Write(p []byte) (int, error) {
	s := l.partial + string(p)
	lines := strings.Split(s, "\n")
	l.partial = lines[len(lines)-1]
	for _, line := range lines[:len(lines)-1] {
		// Progress output redraws lines with \r; a log line keeps what was last drawn.
		line = strings.TrimRight(line, "\r")
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		if err := l.N.Send(map[string]string{"log": line}); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// ErrorLine is the last line of a stream that failed after it started.
func ErrorLine(err error) any {
	kind, _ := errdefs.Kind(err)
	return ErrorBody{ErrorDetail{Kind: kind, Message: err.Error()}}
}

// DecodeError turns a non-2xx response from a gust peer into an error of the right kind.
func DecodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error.Message != "" {
		return errdefs.WithKind(errdefs.FromKind(body.Error.Kind), body.Error.Message)
	}
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// Client makes authenticated JSON requests to a gust peer (the server, or a worker) and turns
// error answers back into errors of their kind. The internal clients of internal/workerproto are
// built on it; the SDKs keep their own.
type Client struct {
	BaseURL string
	Token   string
	// TokenFunc, when set, gives the token for each request instead (one that changes, such
	// as a worker's credential, which it gets when it registers).
	TokenFunc func() string
	HTTP      *http.Client
}

// Do sends in (if not nil) as JSON and decodes the answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.Open(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
		return nil
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// Open sends a request and returns the successful response for the caller to read (a
// stream); the caller closes its body.
func (c *Client) Open(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	token := c.Token
	if c.TokenFunc != nil {
		token = c.TokenFunc()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, errdefs.Unavailable("%s is unreachable: %v", c.BaseURL, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, DecodeError(resp)
	}
	return resp, nil
}
