// Package gust is the Go client of gust, a self-hosted serverless compute platform: it creates
// sandboxes, runs commands in them with streamed stdin, stdout and stderr, reads and writes
// their files, snapshots and terminates them; it calls deployed functions (Remote, Spawn),
// and manages apps and secrets.
//
// It speaks gust's HTTP API (docs/api.md in the gust repository), which is the one contract
// between clients and the server, and uses only the standard library. It imports nothing from
// gust's server or worker; anything may import it.
//
// A minimal session:
//
//	c, err := gust.NewClientFromEnv()
//	if err != nil { ... }
//	app, err := c.LookupApp(ctx, "my-app", true)
//	img, err := c.DebianSlim(ctx, gust.ImageOptions{Logs: os.Stderr})
//	sb, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: img.ID})
//	defer sb.Terminate(context.Background())
//	stdout, _, code, err := sb.Run(ctx, gust.ExecOptions{Command: []string{"echo", "hi"}})
//
// Calling a function that `gust deploy` published (arguments and results travel as JSON):
//
//	f, err := c.FunctionFromName(ctx, "my-app", "square")
//	v, err := f.Remote(ctx, 7) // 49.0; a Python exception is a *RemoteError
//
// Errors that the server reports are *APIError values; test their kind with errors.Is and the
// sentinels ErrNotFound, ErrInvalid, ErrConflict, ErrUnauthorized, ErrTooLarge, ErrUnavailable,
// ErrInternal, ErrForbidden (a role or scope that does not allow the call), ErrQuotaExceeded
// and ErrRateLimited (both also match ErrResourceExhausted). A call to an https server whose
// certificate is not the pinned one fails with ErrCertificateMismatch in its chain.
package gust
