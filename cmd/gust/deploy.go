package main

import (
	"context"
	"errors"
)

func init() {
	register(&command{name: "deploy", summary: "deploy a Python app's functions (they stay up, found by name)", run: runDeploy})
}

func runDeploy(ctx context.Context, args []string) error {
	argv, err := deployArgs(args)
	if err != nil {
		return err
	}
	return execPython(argv)
}

// deployArgs checks `gust deploy`'s arguments and returns the SDK command line's.
func deployArgs(args []string) ([]string, error) {
	fs := cliFlags("deploy", "FILE[::APP] [--name NAME]",
		"Deploys the app that FILE defines (APP names its variable when FILE has several): its\n"+
			"functions replace those deployed before under the app's name and stay up (scaled to zero\n"+
			"when idle) until `gust app stop`. They are found with Function.from_name in Python or\n"+
			"FunctionFromName in Go. It runs python3 with the gust Python SDK built into this binary.")
	name := fs.String("name", "", "app name (default: the name given to gust.App in FILE)")
	compat := fs.Bool("modal-compat", false, "`import modal` (and modal.*) resolves to gust, here and in the app's containers")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		fs.Usage()
		return nil, errors.New("gust deploy needs one Python file, e.g. `gust deploy app.py`")
	}
	argv := []string{"deploy"}
	if *compat {
		argv = append(argv, "--modal-compat")
	}
	argv = append(argv, pos[0])
	if *name != "" {
		argv = append(argv, "--name", *name)
	}
	return argv, nil
}
