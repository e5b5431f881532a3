package main

import (
	"context"
	"log"
	"os"
)

func init() {
	register(&command{name: "install", summary: "install the Debian packages gust needs (runc, runsc, debootstrap)", run: runInstall})
}

func runInstall(ctx context.Context, args []string) error {
	if err := newFlags("install").Parse(args); err != nil {
		return err
	}
	return ensurePackages(log.New(os.Stderr, "gust install: ", 0))
}
