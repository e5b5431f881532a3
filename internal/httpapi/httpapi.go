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

// DecodeJSON reads a JSON body into v, refusing unknown fields and bodies above max bytes.
func DecodeJSON(r *http.Request, v any, max int64) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errdefs.Invalid("request body is empty; send a JSON object")
		}
		return errdefs.Invalid("request body is not valid JSON for this endpoint: %v", err)
	}
	return nil
}

// DecodeOptionalJSON is DecodeJSON for endpoints whose fields are all optional: an empty body
// means the defaults.
func DecodeOptionalJSON(r *http.Request, v any, max int64) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, max))
	if err != nil {
		return errdefs.Invalid("reading request body: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Invalid("request body is not valid JSON for this endpoint: %v", err)
	}
	return nil
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
	HTTP    *http.Client
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
	req.Header.Set("Authorization", "Bearer "+c.Token)
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
