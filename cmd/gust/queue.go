package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "queue create", summary: "create a named Queue (no-op if it exists)", run: runQueueCreate})
	register(&command{name: "queue list", summary: "list named Queues with their partitions and items", run: runQueueList})
	register(&command{name: "queue clear", summary: "delete the items of a Queue partition (or all)", run: runQueueClear})
	register(&command{name: "queue peek", summary: "print the next N items of a Queue without taking them", run: runQueuePeek})
	register(&command{name: "queue len", summary: "print the number of items of a Queue", run: runQueueLen})
	register(&command{name: "queue delete", summary: "delete a named Queue and its items", run: runQueueDelete})
}

func runQueueCreate(ctx context.Context, args []string) error {
	fs := cliFlags("queue create", "NAME", "Creates a named Queue. A no-op when it exists already.")
	pos, err := namedArgs(fs, args, 1, 1, "queue create needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	_, err = c.CreateQueue(ctx, pos[0], true)
	return err
}

func runQueueList(ctx context.Context, args []string) error {
	fs := cliFlags("queue list", "[--json]", "Lists the named Queues, newest first, with their partitions and items.")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := namedArgs(fs, args, 0, 0, "queue list takes no arguments"); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	qs, err := c.ListQueues(ctx, gust.ObjectListOptions{})
	if err != nil {
		return err
	}
	rows := make([][]string, len(qs))
	for i, q := range qs {
		size := strconv.Itoa(q.TotalSize)
		if q.TotalSize >= 100_000 {
			size = ">100000"
		}
		rows[i] = []string{q.Name, q.CreatedAt.Local().Format(time.DateTime), q.CreatedBy, strconv.Itoa(q.Partitions), size}
	}
	return printTable(os.Stdout, []string{"Name", "Created at", "Created by", "Partitions", "Total size"}, rows, *asJSON)
}

// partitionFlag adds -p/--partition.
func partitionFlag(fs interface {
	StringVar(*string, string, string, string)
}) *string {
	p := new(string)
	fs.StringVar(p, "partition", "", "the partition (default: the default partition)")
	fs.StringVar(p, "p", "", "same as --partition")
	return p
}

func runQueueClear(ctx context.Context, args []string) error {
	fs := cliFlags("queue clear", "NAME [--partition P | --all] [--yes]", "Deletes the items of a Queue partition, or of all partitions.")
	part := partitionFlag(fs)
	all := fs.Bool("all", false, "clear every partition")
	fs.BoolVar(all, "a", false, "same as --all")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 1, 1, "queue clear needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	q, err := c.QueueFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to irrevocably delete the contents of Queue '%s'?", pos[0])); err != nil {
		return err
	}
	return q.Clear(ctx, *part, *all)
}

func runQueuePeek(ctx context.Context, args []string) error {
	fs := cliFlags("queue peek", "NAME [N] [--partition P]", "Prints the next N items (1 by default) without taking them.")
	part := partitionFlag(fs)
	pos, err := namedArgs(fs, args, 1, 2, "queue peek needs NAME and at most N")
	if err != nil {
		return err
	}
	n := 1
	if len(pos) == 2 {
		if n, err = strconv.Atoi(pos[1]); err != nil || n < 1 {
			return fmt.Errorf("N must be a whole number of at least 1, got %q", pos[1])
		}
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	q, err := c.QueueFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	after, shown := "", 0
	for shown < n {
		items, err := q.Items(ctx, *part, after, 0)
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		for _, it := range items {
			fmt.Println(showValue(it.Value, false))
			after = it.ID
			if shown++; shown >= n {
				break
			}
		}
	}
	return nil
}

func runQueueLen(ctx context.Context, args []string) error {
	fs := cliFlags("queue len", "NAME [--partition P | --total]", "Prints the number of items of a partition, or of all partitions.")
	part := partitionFlag(fs)
	total := fs.Bool("total", false, "count the items of every partition")
	fs.BoolVar(total, "t", false, "same as --total")
	pos, err := namedArgs(fs, args, 1, 1, "queue len needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	q, err := c.QueueFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	n, err := q.Len(ctx, *part, *total)
	if err != nil {
		return err
	}
	fmt.Println(n)
	return nil
}

func runQueueDelete(ctx context.Context, args []string) error {
	fs := cliFlags("queue delete", "NAME [--allow-missing] [--yes]", "Deletes a named Queue and all of its items.")
	allowMissing := fs.Bool("allow-missing", false, "no error if the Queue does not exist")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 1, 1, "queue delete needs NAME")
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to irrevocably delete the Queue '%s'?", pos[0])); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	return c.DeleteQueue(ctx, pos[0], *allowMissing)
}
