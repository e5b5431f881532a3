// Package contract holds only a test: it drives the Go SDK (sdk/go) against the server's real
// HTTP handler, with a fake worker that speaks the server's own worker-protocol types
// (internal/workerproto). The SDK keeps its own copy of the API's wire types, since it imports
// nothing of the server's; this test is where a drift between that copy and the server's breaks
// the build's tests instead of a user's program. It needs no root and no containers. Nothing
// imports it.
package contract
