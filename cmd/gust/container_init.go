package main

import (
	"context"
	"errors"

	"github.com/gust-run/gust/internal/containerinit"
)

func init() {
	register(&command{
		name:    "container-init",
		hidden:  true,
		summary: "run as PID 1 inside a gust container, serving the worker on stdio (internal)",
		run: func(ctx context.Context, args []string) error {
			err := containerinit.Run()
			var status containerinit.ExitStatus
			if errors.As(err, &status) {
				return exitCode(status)
			}
			return err
		},
	})
}
