package main

import (
	"context"
	"log"
	"os"

	"github.com/gust-run/gust/internal/container"
)

func init() {
	register(&command{name: "install", summary: "install what gust runs on: Debian's runc and debootstrap, and a current runsc built from the pinned gVisor (Debian's runsc if that fails)", run: runInstall})
}

func runInstall(ctx context.Context, args []string) error {
	if err := newFlags("install").Parse(args); err != nil {
		return err
	}
	logger := log.New(os.Stderr, "gust install: ", 0)
	if err := ensurePackages(ctx, logger); err != nil {
		return err
	}
	p, from := container.FindRunsc()
	logger.Printf("gVisor runs under runsc %s, chosen by %s", container.DescribeRunsc(p), from)
	return nil
}
