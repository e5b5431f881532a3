package gust

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		want     error
		wantKind string
		wantMsg  string
	}{
		{"invalid", 400, `{"error":{"kind":"invalid","message":"timeout must not be negative"}}`, ErrInvalid, KindInvalid, "timeout must not be negative"},
		{"unauthorized", 401, `{"error":{"kind":"unauthorized","message":"wrong token"}}`, ErrUnauthorized, KindUnauthorized, "wrong token"},
		{"not found", 404, `{"error":{"kind":"not_found","message":"sandbox sb-x not found"}}`, ErrNotFound, KindNotFound, "sandbox sb-x not found"},
		{"conflict", 409, `{"error":{"kind":"conflict","message":"sandbox sb-1 has been terminated"}}`, ErrConflict, KindConflict, "sandbox sb-1 has been terminated"},
		{"too large", 413, `{"error":{"kind":"too_large","message":"above 64 MiB"}}`, ErrTooLarge, KindTooLarge, "above 64 MiB"},
		{"unavailable", 503, `{"error":{"kind":"unavailable","message":"no worker"}}`, ErrUnavailable, KindUnavailable, "no worker"},
		{"internal", 500, `{"error":{"kind":"internal","message":"boom"}}`, ErrInternal, KindInternal, "boom"},
		{"kind missing: from status", 404, `{"error":{"message":"gone"}}`, ErrNotFound, KindNotFound, "gone"},
		{"plain text body", 502, "Bad Gateway from proxy\n", ErrUnavailable, KindUnavailable, "HTTP 502: Bad Gateway from proxy"},
		{"empty body", 409, "", ErrConflict, KindConflict, "HTTP 409 Conflict"},
		{"plain 401 gets a hint", 401, "no", ErrUnauthorized, KindUnauthorized, "HTTP 401: no (set GUST_TOKEN"},
		{"forbidden", 403, `{"error":{"kind":"forbidden","message":"role readonly may not create sandboxes"}}`, ErrForbidden, KindForbidden, "role readonly may not"},
		{"quota exceeded", 403, `{"error":{"kind":"quota_exceeded","message":"workspace ws-a is at its quota of 2 sandboxes"}}`, ErrQuotaExceeded, KindQuotaExceeded, "workspace ws-a is at its quota"},
		{"rate limited", 429, `{"error":{"kind":"rate_limited","message":"over 10 requests/s"}}`, ErrRateLimited, KindRateLimited, "over 10 requests/s"},
		{"plain 403", 403, "", ErrForbidden, KindForbidden, "HTTP 403 Forbidden"},
		{"plain 429", 429, "slow down", ErrRateLimited, KindRateLimited, "HTTP 429: slow down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			f.handle("GET /v1/sandboxes/sb-x", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			_, err := c.Sandbox(t.Context(), "sb-x")
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v does not match %v", err, tt.want)
			}
			for _, other := range []error{ErrInvalid, ErrUnauthorized, ErrNotFound, ErrConflict, ErrTooLarge, ErrUnavailable, ErrInternal,
				ErrForbidden, ErrQuotaExceeded, ErrRateLimited} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %T is not an *APIError", err)
			}
			if apiErr.Status != tt.status || apiErr.Kind != tt.wantKind || !strings.HasPrefix(apiErr.Message, tt.wantMsg) {
				t.Errorf("got %+v, want status %d kind %s message %q", apiErr, tt.status, tt.wantKind, tt.wantMsg)
			}
			// Quotas and rate limits are both Modal's ResourceExhaustedError.
			exhausted := tt.want == ErrQuotaExceeded || tt.want == ErrRateLimited
			if errors.Is(err, ErrResourceExhausted) != exhausted {
				t.Errorf("errors.Is(%v, ErrResourceExhausted) = %v", err, !exhausted)
			}
			// Wrapped further, it still matches.
			if !errors.Is(fmt.Errorf("outer: %w", err), tt.want) {
				t.Error("wrapped error no longer matches")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Error() = %q, want it to contain %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	c, err := NewClient(Config{ServerURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Health(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gust server at http://127.0.0.1:1") {
		t.Fatalf("error %v", err)
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		t.Error("a connection failure is not an APIError")
	}
}

func TestAuthHeaderAndHealth(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"ok": true, "version": "9.9"})
	})
	f.handle("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"apps": []any{map[string]any{"app_id": "ap-1", "name": "a", "created_at": "2026-01-01T00:00:00Z"}}})
	})
	h, err := c.Health(t.Context())
	if err != nil || !h.OK || h.Version != "9.9" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	apps, err := c.ListApps(t.Context())
	if err != nil || len(apps) != 1 || apps[0].ID != "ap-1" || apps[0].CreatedAt.Year() != 2026 {
		t.Fatalf("ListApps = %+v, %v", apps, err)
	}
	bad, _ := NewClient(Config{ServerURL: f.srv.URL, Token: "wrong"})
	if _, err := bad.ListApps(t.Context()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestLookupApp(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("POST /v1/apps/lookup", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, r)
		if b["create_if_missing"] != true {
			writeErr(w, 404, "not_found", fmt.Sprintf("app %q not found", b["name"]))
			return
		}
		writeJSON(w, 200, map[string]any{"app_id": "ap-9", "name": b["name"], "created_at": "2026-01-01T00:00:00Z"})
	})
	app, err := c.LookupApp(t.Context(), "x", true)
	if err != nil || app.ID != "ap-9" || app.Name != "x" {
		t.Fatalf("LookupApp = %+v, %v", app, err)
	}
	if _, err := c.LookupApp(t.Context(), "x", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing app: %v", err)
	}
}
