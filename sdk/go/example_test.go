package gust_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

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
