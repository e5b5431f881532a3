// Package errdefs holds the few error kinds gust distinguishes. Code anywhere wraps one of these
// with context (fmt.Errorf("...: %w", errdefs.ErrNotFound)); only the API edge turns a kind into
// an HTTP status. Errors are matched with errors.Is, never by string.
package errdefs

import (
	"errors"
	"fmt"
	"net/http"
)

// The kinds. Their text is the API's "kind" field.
var (
	ErrInvalid      = errors.New("invalid")
	ErrNotFound     = errors.New("not_found")
	ErrConflict     = errors.New("conflict")
	ErrUnavailable  = errors.New("unavailable")
	ErrTooLarge     = errors.New("too_large")
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the credential is good but its role or scope does not allow the call.
	ErrForbidden = errors.New("forbidden")
	// ErrQuota: the call would take the workspace over one of its quotas.
	ErrQuota = errors.New("quota_exceeded")
	// ErrRateLimited: the workspace's request rate quota is spent for now.
	ErrRateLimited = errors.New("rate_limited")
	// ErrResourceExhausted: a bounded object is full for now (a Queue partition); Modal's
	// clients raise queue.Full for it.
	ErrResourceExhausted = errors.New("resource_exhausted")
)

// Invalid returns an error of kind ErrInvalid with a formatted message.
func Invalid(format string, args ...any) error {
	return kindError{ErrInvalid, fmt.Sprintf(format, args...)}
}

// NotFound returns an error of kind ErrNotFound with a formatted message.
func NotFound(format string, args ...any) error {
	return kindError{ErrNotFound, fmt.Sprintf(format, args...)}
}

// Conflict returns an error of kind ErrConflict with a formatted message.
func Conflict(format string, args ...any) error {
	return kindError{ErrConflict, fmt.Sprintf(format, args...)}
}

// Unavailable returns an error of kind ErrUnavailable with a formatted message.
func Unavailable(format string, args ...any) error {
	return kindError{ErrUnavailable, fmt.Sprintf(format, args...)}
}

// TooLarge returns an error of kind ErrTooLarge with a formatted message.
func TooLarge(format string, args ...any) error {
	return kindError{ErrTooLarge, fmt.Sprintf(format, args...)}
}

// WithKind returns an error of the given kind with message msg.
func WithKind(kind error, msg string) error { return kindError{kind, msg} }

type kindError struct {
	kind error
	msg  string
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }

// Kind returns the API kind name and HTTP status for err.
func Kind(err error) (string, int) {
	switch {
	case errors.Is(err, ErrInvalid):
		return "invalid", http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return "not_found", http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return "conflict", http.StatusConflict
	case errors.Is(err, ErrTooLarge):
		return "too_large", http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized", http.StatusUnauthorized
	case errors.Is(err, ErrUnavailable):
		return "unavailable", http.StatusServiceUnavailable
	case errors.Is(err, ErrForbidden):
		return "forbidden", http.StatusForbidden
	case errors.Is(err, ErrQuota):
		return "quota_exceeded", http.StatusForbidden
	case errors.Is(err, ErrRateLimited):
		return "rate_limited", http.StatusTooManyRequests
	case errors.Is(err, ErrResourceExhausted):
		return "resource_exhausted", http.StatusTooManyRequests
	}
	return "internal", http.StatusInternalServerError
}

// FromKind maps an API kind name back to its error kind (used when a response from a worker is
// relayed).
func FromKind(kind string) error {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrConflict, ErrTooLarge, ErrUnauthorized, ErrUnavailable, ErrForbidden, ErrQuota, ErrRateLimited, ErrResourceExhausted} {
		if k.Error() == kind {
			return k
		}
	}
	return errors.New("internal")
}
