package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "image ls", summary: "list images and the disk their layers use", run: runImageLs})
	register(&command{name: "image build", summary: "build (or find cached) the debian_slim base image", run: runImageBuild})
	register(&command{name: "image rm", summary: "forget images (their layers go at the next prune)", run: runImageRm})
	register(&command{name: "image prune", summary: "remove image layers no image uses", run: runImagePrune})
}

func runImageLs(ctx context.Context, args []string) error {
	if err := newFlags("image ls").Parse(args); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	ims, err := c.ListImages(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tPARENT\tSIZE\tCREATED")
	for _, im := range ims {
		parent := im.ParentID
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.ID, im.Kind, parent, humanBytes(im.SizeBytes), im.CreatedAt.Local().Format(time.DateTime))
	}
	tw.Flush()
	if du, err := c.ImageDiskUsage(ctx); err == nil {
		fmt.Printf("layers on disk: %s\n", humanBytes(du))
	}
	return nil
}

func runImageBuild(ctx context.Context, args []string) error {
	fs := newFlags("image build")
	py := fs.String("python-version", "", "Python version (this host offers Debian bookworm's 3.11)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	im, err := c.DebianSlim(ctx, gust.ImageOptions{PythonVersion: *py, Logs: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Println(im.ID)
	return nil
}

func runImageRm(ctx context.Context, args []string) error {
	fs := newFlags("image rm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("image rm needs one or more image ids")
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range fs.Args() {
		if err := c.DeleteImage(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(id)
	}
	return errors.Join(errs...)
}

func runImagePrune(ctx context.Context, args []string) error {
	fs := newFlags("image prune")
	olderThan := fs.Duration("older-than", 10*time.Minute, "spare layers made more recently (a build may be under way)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	r, err := c.PruneImages(ctx, *olderThan)
	if err != nil {
		return err
	}
	fmt.Printf("removed %d layers and %d uploads, freed %s; %s of layers in use\n", r.LayersRemoved, r.BlobsRemoved, humanBytes(r.FreedBytes), humanBytes(r.KeptBytes))
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
