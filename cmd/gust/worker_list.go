package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "worker list", summary: "list the workers and their GPUs (which are in use), and containers waiting for GPUs", run: runWorkerList})
}

func runWorkerList(ctx context.Context, args []string) error {
	fs := cliFlags("worker list", "", "Lists the workers: cores, memory, runtimes, containers, and each GPU (type, model,\nmemory, UUID, driver, CUDA, MIG mode, in use or free); then this workspace's containers\nthat wait for GPUs, and why.")
	if pos, _, err := parseArgs(fs, args, 0); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("worker list takes no arguments, got %q", pos)
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	ws, waiting, err := c.Workers(ctx)
	if err != nil {
		return err
	}
	return printWorkers(os.Stdout, ws, waiting, time.Now())
}

// printWorkers writes the table of `gust worker list`: a line per worker, one per GPU under it.
func printWorkers(w io.Writer, ws []gust.Worker, waiting []gust.GPUWait, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tNAME\tCPU\tMEMORY\tRUNTIMES\tCONTAINERS\tGPUS")
	for _, wk := range ws {
		used := 0
		for _, g := range wk.GPUs {
			if g.InUse {
				used++
			}
		}
		gpus := "-"
		if len(wk.GPUs) > 0 {
			gpus = fmt.Sprintf("%d (%d in use)", len(wk.GPUs), used)
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%d MiB\t%s\t%d\t%s\n", wk.ID, wk.Name, wk.CPU, wk.MemoryMiB, strings.Join(wk.Isolation, ","), wk.Containers, gpus)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, wk := range ws {
		for _, g := range wk.GPUs {
			if !header {
				fmt.Fprintln(tw, "\nWORKER\tGPU\tTYPE\tMODEL\tMEMORY\tUUID\tDRIVER\tCUDA\tMIG\tSTATE")
				header = true
			}
			state := "free"
			if g.InUse {
				state = "in use"
			}
			fmt.Fprintf(tw, "%s\tgpu %d\t%s\t%s\t%d MiB\t%s\t%s\t%s\t%s\t%s\n", wk.Name, g.Index, orDash(g.Type), g.Model, g.MemoryMiB, g.UUID, orDash(g.Driver), orDash(g.CUDA), orDash(g.MIG), state)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, wt := range waiting {
		fmt.Fprintf(w, "container %s %s (for %s)\n", wt.ContainerID, wt.Reason, now.Sub(wt.Since).Round(time.Second))
	}
	return nil
}

// splitList reads a comma-separated flag value; "" is none.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
