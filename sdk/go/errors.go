package gust

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error kinds the API reports in {"error": {"kind": ...}}.
const (
	KindInvalid      = "invalid"
	KindUnauthorized = "unauthorized"
	KindNotFound     = "not_found"
	KindConflict     = "conflict"
	KindTooLarge     = "too_large"
	KindUnavailable  = "unavailable"
	KindInternal     = "internal"
	// KindForbidden: the credential is good but its role, or a function container's
	// allowlist, does not allow the call (HTTP 403).
	KindForbidden = "forbidden"
	// KindQuotaExceeded: the call would take the workspace over one of its quotas; the
	// message names the quota and its value (HTTP 403).
	KindQuotaExceeded = "quota_exceeded"
	// KindRateLimited: the workspace's request rate quota is spent for now (HTTP 429).
	KindRateLimited = "rate_limited"
	// KindResourceExhausted: a bounded object is full for now (a Queue partition).
	KindResourceExhausted = "resource_exhausted"
)

// Sentinels for errors.Is: errors.Is(err, gust.ErrNotFound) holds for an *APIError of kind
// not_found anywhere in err's chain.
var (
	ErrInvalid      = &kindError{KindInvalid}
	ErrUnauthorized = &kindError{KindUnauthorized}
	ErrNotFound     = &kindError{KindNotFound}
	ErrConflict     = &kindError{KindConflict}
	ErrTooLarge     = &kindError{KindTooLarge}
	ErrUnavailable  = &kindError{KindUnavailable}
	ErrInternal     = &kindError{KindInternal}
	// ErrForbidden is Modal's PermissionDeniedError.
	ErrForbidden     = &kindError{KindForbidden}
	ErrQuotaExceeded = &kindError{KindQuotaExceeded}
	ErrRateLimited   = &kindError{KindRateLimited}
	// ErrResourceExhausted (Modal's ResourceExhaustedError) matches a full Queue partition
	// (Modal's queue.Full) and both ErrQuotaExceeded and ErrRateLimited:
	// errors.Is(err, gust.ErrResourceExhausted) catches any of them.
	ErrResourceExhausted = &kindError{KindResourceExhausted}
)

// kindError is the type of the sentinels.
type kindError struct{ kind string }

func (e *kindError) Error() string { return "gust: " + strings.ReplaceAll(e.kind, "_", " ") }

// APIError is an error the gust server reported: a non-2xx answer, or the error line that ends
// a stream.
type APIError struct {
	// Status is the HTTP status code (for an error inside a stream, the code its kind maps to).
	Status int
	// Kind is one of the Kind* constants (derived from Status when the body had none).
	Kind string
	// Message says what was wrong and what to do.
	Message string
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// Is reports whether target is the sentinel of e's kind (or ErrResourceExhausted, for a full
// Queue, a quota or a rate limit).
func (e *APIError) Is(target error) bool {
	k, ok := target.(*kindError)
	if !ok {
		return false
	}
	if k == ErrResourceExhausted {
		return e.Kind == KindResourceExhausted || e.Kind == KindQuotaExceeded || e.Kind == KindRateLimited
	}
	return k.kind == e.Kind
}

var kindStatus = map[string]int{
	KindInvalid:       http.StatusBadRequest,
	KindUnauthorized:  http.StatusUnauthorized,
	KindNotFound:      http.StatusNotFound,
	KindConflict:      http.StatusConflict,
	KindTooLarge:      http.StatusRequestEntityTooLarge,
	KindUnavailable:   http.StatusServiceUnavailable,
	KindInternal:      http.StatusInternalServerError,
	KindForbidden:     http.StatusForbidden,
	KindQuotaExceeded: http.StatusForbidden,
	KindRateLimited:   http.StatusTooManyRequests,

	KindResourceExhausted: http.StatusTooManyRequests,
}

// kindForStatus maps an HTTP status to an error kind, for answers without an error body.
func kindForStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnprocessableEntity:
		return KindInvalid
	case http.StatusUnauthorized:
		return KindUnauthorized
	case http.StatusForbidden:
		return KindForbidden
	case http.StatusTooManyRequests:
		return KindRateLimited
	case http.StatusNotFound:
		return KindNotFound
	case http.StatusConflict:
		return KindConflict
	case http.StatusRequestEntityTooLarge:
		return KindTooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return KindUnavailable
	}
	return KindInternal
}

// errorBody is the JSON body of an API error.
type errorBody struct {
	Error *errorDetail `json:"error"`
}

type errorDetail struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (d *errorDetail) apiError(status int) *APIError {
	kind := d.Kind
	if kind == "" {
		kind = kindForStatus(status)
	}
	if status == 0 {
		status = kindStatus[kind]
		if status == 0 {
			status = http.StatusInternalServerError
		}
	}
	return &APIError{Status: status, Kind: kind, Message: d.Message}
}

// decodeError turns a non-2xx response into an *APIError. It reads (part of) the body but does
// not close it.
func decodeError(resp *http.Response) *APIError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body errorBody
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Message != "" {
		return body.Error.apiError(resp.StatusCode)
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	} else {
		msg = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		msg += " (set GUST_TOKEN_ID and GUST_TOKEN_SECRET, or run `gust token set` or `gust up`, which write the client config)"
	}
	return &APIError{Status: resp.StatusCode, Kind: kindForStatus(resp.StatusCode), Message: msg}
}

// errorsAsAPI returns the *APIError in err's chain, if any.
func errorsAsAPI(err error) (*APIError, bool) {
	var e *APIError
	ok := errors.As(err, &e)
	return e, ok
}
