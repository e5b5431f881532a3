package main

import (
	"context"
	"fmt"
	"os"
)

func init() {
	register(&command{name: "serve", summary: "serve a Python app's web endpoints, redeploying when its code changes (modal serve)", run: runServe})
}

const serveUsage = `usage: gust serve [--modal-compat] [--timeout SECONDS] FILE[::APP]

Runs FILE's app as an ephemeral app, prints its web endpoints' URLs
(https://<workspace>--<label>-dev.<ingress domain>), and runs it again from the new code
whenever a .py file in FILE's directory changes, until Ctrl-C or --timeout, like modal serve.
--modal-compat makes ` + "`import modal`" + ` resolve to gust, here and in the containers.`

func runServe(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(os.Stderr, serveUsage)
		if len(args) == 0 {
			return fmt.Errorf("gust serve needs a Python file, e.g. `gust serve app.py`")
		}
		return exitCode(0)
	}
	return execPython(append([]string{"serve"}, args...))
}
