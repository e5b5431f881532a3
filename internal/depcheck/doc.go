// Package depcheck holds no code: only deps_test.go, which lists, for every package of gust,
// the gust packages it may import, and fails when a package imports one that is not on its
// list. It is how "imported by X only" in a package doc comment is enforced rather than
// hoped. Run it with `go test ./internal/depcheck/`. Nothing imports this package.
package depcheck
