package gust_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// Create a sandbox, run commands in it, and terminate it.
func Example() {
	ctx := context.Background()
	c, err := gust.NewClientFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	app, err := c.LookupApp(ctx, "my-app", true)
	if err != nil {
		log.Fatal(err)
	}
	img, err := c.DebianSlim(ctx, gust.ImageOptions{Logs: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: img.ID})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(context.Background())

	stdout, _, code, err := sb.Run(ctx, gust.ExecOptions{Command: []string{"python3", "-c", "print(6*7)"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d: %s", code, stdout)
}

// Stream a long-running command's output as it arrives, feeding it stdin.
func ExampleSandbox_Exec() {
	ctx := context.Background()
	c, _ := gust.NewClientFromEnv()
	sb, err := c.Sandbox(ctx, "sb-...")
	if err != nil {
		log.Fatal(err)
	}
	p, err := sb.Exec(ctx, gust.ExecOptions{
		Command: []string{"sh", "-c", "while read l; do echo got $l; done"},
		Stdin:   strings.NewReader("a\nb\n"),
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	code, err := p.Wait(ctx)
	fmt.Println(code, err)
}

// Call a deployed function and wait for its result; spawn another call and collect it later.
func ExampleFunction_Remote() {
	ctx := context.Background()
	c, err := gust.NewClientFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	f, err := c.FunctionFromName(ctx, "my-app", "square")
	if err != nil {
		log.Fatal(err)
	}
	v, err := f.Remote(ctx, 7)
	var re *gust.RemoteError
	switch {
	case errors.As(err, &re):
		log.Fatalf("square raised %s: %s\n%s", re.Type, re.Message, re.Traceback)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(v)
	call, err := f.Spawn(ctx, 8)
	if err != nil {
		log.Fatal(err)
	}
	var n int
	if err := call.Get(ctx, time.Minute, &n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
}
