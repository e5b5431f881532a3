package contract

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	gust "github.com/gust-run/gust/sdk/go"
)

// volumeSteps drives the Go SDK's Volumes against the real handler, store and blob store.
func volumeSteps(ctx context.Context, t *testing.T, c *gust.Client) {
	v, err := c.CreateVolume(ctx, "files", false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.ID, "vo-") || v.Name != "files" || v.Version != "" || v.Bytes != 0 {
		t.Fatalf("created Volume %+v", v)
	}
	if _, err := c.CreateVolume(ctx, "files", false); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("creating it again: %v, want the SDK's conflict", err)
	}
	if _, err := c.VolumeFromName(ctx, "nope", false); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("a missing Volume: %v, want the SDK's not found", err)
	}
	up := []gust.VolumeUpload{{Path: "/a/one.txt", Body: strings.NewReader("one")}, {Path: "b.txt", Body: strings.NewReader("bee"), Mode: 0o600}}
	if err := v.Upload(ctx, up, false); err != nil {
		t.Fatal(err)
	}
	if v.Version == "" || v.Bytes != 6 {
		t.Fatalf("after the upload: %+v", v)
	}
	if err := v.Upload(ctx, []gust.VolumeUpload{{Path: "b.txt", Body: strings.NewReader("x")}}, false); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("an upload over a file without force: %v", err)
	}
	es, err := v.ListDir(ctx, "/", true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Path+":"+e.Type)
	}
	if strings.Join(got, " ") != "a:directory a/one.txt:file b.txt:file" {
		t.Fatalf("listing: %v", got)
	}
	rc, err := v.ReadFile(ctx, "a/one.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "one" {
		t.Fatalf("read: %q", b)
	}
	if _, err := v.ReadFile(ctx, "missing"); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("reading a missing file: %v", err)
	}
	if err := v.Copy(ctx, []string{"b.txt"}, "a", false); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove(ctx, "a", false); !errors.Is(err, gust.ErrInvalid) {
		t.Fatalf("removing a directory without recursive: %v", err)
	}
	if err := v.Remove(ctx, "a", true); err != nil || v.Bytes != 3 {
		t.Fatalf("remove: %v, %d bytes left", err, v.Bytes)
	}
	if err := v.Rename(ctx, "renamed"); err != nil || v.Name != "renamed" {
		t.Fatalf("rename: %v %+v", err, v)
	}
	vs, err := c.ListVolumes(ctx, gust.ObjectListOptions{})
	if err != nil || len(vs) != 1 || vs[0].Name != "renamed" {
		t.Fatalf("list: %v %+v", err, vs)
	}
	if err := v.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.VolumeFromName(ctx, "renamed", false); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
