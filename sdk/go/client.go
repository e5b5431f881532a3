package gust

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client talks to one gust server. It is safe for concurrent use and reuses connections; make
// one and share it.
type Client struct {
	baseURL string
	auth    string // the Authorization header, "" for none
	http    *http.Client
}

// NewClient returns a client for cfg. An empty ServerURL means DefaultServerURL. It sends
// "Authorization: Bearer TokenID:TokenSecret" when both are set, else "Bearer Token"; a token
// id without its secret (or the reverse) is an error.
func NewClient(cfg Config) (*Client, error) {
	base := normalizeURL(cfg.ServerURL)
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("gust server URL %q is not valid: use http://HOST:PORT (GUST_SERVER_URL or server_url in the config file)", cfg.ServerURL)
	}
	auth, err := cfg.authorization()
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		if u.Scheme != "https" && (cfg.TLSFingerprint != "" || cfg.TLSCAFile != "") {
			return nil, fmt.Errorf("gust config pins a TLS certificate but the server URL %s is not https: use https://", base)
		}
		tc, err := cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		t := newTransport()
		t.TLSClientConfig = tc
		hc = &http.Client{Transport: t}
	}
	return &Client{baseURL: base, auth: auth, http: hc}, nil
}

// NewClientFromEnv returns a client configured by LoadConfig: the environment, else the
// selected profile of the config file that `gust up` and `gust token set` write.
func NewClientFromEnv() (*Client, error) {
	cfg, err := LoadConfig()
	if err != nil {
		return nil, err
	}
	return NewClient(cfg)
}

// newTransport keeps connections alive between calls: an exec round trip should not pay for a
// TCP handshake.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// ServerURL is the base URL the client talks to.
func (c *Client) ServerURL() string { return c.baseURL }

// request describes one API call.
type request struct {
	method string
	path   string     // under the base URL, starting with /v1
	query  url.Values // may be nil
	json   any        // JSON body, if not nil
	body   io.Reader  // raw body (application/octet-stream), if json is nil
}

// send makes a request and returns the response when its status is 2xx; otherwise the
// *APIError the server reported. The caller closes the body.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.baseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	contentType := ""
	switch {
	case r.json != nil:
		b, err := json.Marshal(r.json)
		if err != nil {
			return nil, err
		}
		body, contentType = bytes.NewReader(b), "application/json"
	case r.body != nil:
		body, contentType = r.body, "application/octet-stream"
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	req.Header.Set("User-Agent", "gust-go/"+Version)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach the gust server at %s: %w (is `gust up` running? set GUST_SERVER_URL)", c.baseURL, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// call makes a request and decodes a JSON answer into out (if not nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the answer to %s %s: %w", r.method, r.path, err)
	}
	return nil
}

// Version is this SDK's version, sent as its User-Agent.
const Version = "0.1.0"

// HealthInfo is the answer of the health endpoint.
type HealthInfo struct {
	OK      bool   `json:"ok"`
	Version string `json:"version"`
}

// Health checks that the server answers. It needs no token.
func (c *Client) Health(ctx context.Context) (*HealthInfo, error) {
	var h HealthInfo
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/health"}, &h); err != nil {
		return nil, fmt.Errorf("health check: %w", err)
	}
	return &h, nil
}

// pathEscape escapes one path segment (an id).
func pathEscape(s string) string { return url.PathEscape(s) }

// seconds turns a duration into the API's seconds.
func seconds(d time.Duration) float64 { return d.Seconds() }

// duration turns the API's seconds into a duration.
func duration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
