package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRoutes builds the mux (conflicting patterns panic there) and checks the answers that
// need no store: health without auth, 401 without a token, JSON 404 and 405.
func TestRoutes(t *testing.T) {
	h := New(Config{Token: "t"}, nil, nil, nil, nil, nil).Handler()
	tests := []struct {
		method, path, token string
		status              int
		body                string
	}{
		{"GET", "/v1/health", "", 200, `"ok":true`},
		{"GET", "/v1/sandboxes", "", 401, "bearer token"},
		{"GET", "/elsewhere", "", 404, "/v1"},
		{"GET", "/v1/sandboxes/sb-1/terminate", "t", 405, "not allowed"},
		{"PUT", "/v1/images", "t", 405, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
				t.Fatalf("%d %s", rec.Code, rec.Body.String())
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}
