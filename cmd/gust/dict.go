package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// `gust dict ...` and `gust queue ...` (queue.go), as Modal's `modal dict` and `modal queue`.
// Values are Python pickles: the CLI shows the plain ones (strings, numbers, lists, dicts ...)
// as Python prints them, and others as a placeholder; keys given on the command line are
// strings, as in Modal's CLI.

func init() {
	register(&command{name: "dict create", summary: "create a named Dict (no-op if it exists)", run: runDictCreate})
	register(&command{name: "dict list", summary: "list named Dicts", run: runDictList})
	register(&command{name: "dict clear", summary: "delete every entry of a Dict", run: runDictClear})
	register(&command{name: "dict get", summary: "print the value of a key of a Dict", run: runDictGet})
	register(&command{name: "dict items", summary: "print the entries of a Dict", run: runDictItems})
	register(&command{name: "dict delete", summary: "delete a named Dict and its entries", run: runDictDelete})
}

// namedArgs parses a command taking from min to max positional arguments.
func namedArgs(fs *flag.FlagSet, args []string, min, max int, what string) ([]string, error) {
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return nil, err
	}
	if len(pos) < min || len(pos) > max {
		fs.Usage()
		return nil, fmt.Errorf("%s: wrong number of arguments", what)
	}
	return pos, nil
}

// confirm asks on the terminal, as Modal's CLI does, unless yes.
func confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	fmt.Fprintf(os.Stderr, "%s [y/N]: ", question)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if a := strings.ToLower(strings.TrimSpace(line)); a == "y" || a == "yes" {
		return nil
	}
	return errors.New("aborted (pass --yes to skip the question)")
}

// showValue formats a stored pickle as Python's str() (or repr()) of it would.
func showValue(b []byte, repr bool) string {
	v, err := gust.Unpickle(b)
	if err != nil {
		return fmt.Sprintf("<pickled object, %d bytes>", len(b))
	}
	if repr {
		return gust.PyRepr(v)
	}
	return gust.PyStr(v)
}

// jsonValue is a stored pickle as JSON for --json: the plain value, or a placeholder.
func jsonValue(b []byte) any {
	v, err := gust.Unpickle(b)
	if err != nil {
		return fmt.Sprintf("<pickled object, %d bytes>", len(b))
	}
	return toJSON(v)
}

func toJSON(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toJSON(e)
		}
		return out
	case gust.PyTuple:
		return toJSON([]any(x))
	case gust.PySet:
		return toJSON([]any(x))
	case gust.PyFrozenSet:
		return toJSON([]any(x))
	case gust.PyDict:
		m := map[string]any{}
		for _, p := range x {
			m[gust.PyStr(p.Key)] = toJSON(p.Value)
		}
		return m
	case []byte:
		return gust.PyRepr(x)
	case nil, bool, int64, float64, string:
		return x
	}
	return gust.PyRepr(v)
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func runDictCreate(ctx context.Context, args []string) error {
	fs := cliFlags("dict create", "NAME", "Creates a named Dict. A no-op when it exists already.")
	pos, err := namedArgs(fs, args, 1, 1, "dict create needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	_, err = c.CreateDict(ctx, pos[0], true)
	return err
}

func runDictList(ctx context.Context, args []string) error {
	fs := cliFlags("dict list", "[--json]", "Lists the named Dicts, newest first.")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := namedArgs(fs, args, 0, 0, "dict list takes no arguments"); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	ds, err := c.ListDicts(ctx, gust.ObjectListOptions{})
	if err != nil {
		return err
	}
	rows := make([][]string, len(ds))
	for i, d := range ds {
		rows[i] = []string{d.Name, d.CreatedAt.Local().Format(time.DateTime), d.CreatedBy}
	}
	return printTable(os.Stdout, []string{"Name", "Created at", "Created by"}, rows, *asJSON)
}

// printTable writes rows under a header, or as JSON objects keyed by the header.
func printTable(w io.Writer, header []string, rows [][]string, asJSON bool) error {
	if asJSON {
		out := make([]map[string]string, len(rows))
		for i, r := range rows {
			out[i] = map[string]string{}
			for j, h := range header {
				out[i][h] = r[j]
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for j := range r {
			r[j] = orDash(r[j])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func runDictClear(ctx context.Context, args []string) error {
	fs := cliFlags("dict clear", "NAME [--yes]", "Deletes every entry of a named Dict.")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 1, 1, "dict clear needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	d, err := c.DictFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to irrevocably delete the contents of Dict '%s'?", pos[0])); err != nil {
		return err
	}
	return d.Clear(ctx)
}

func runDictGet(ctx context.Context, args []string) error {
	fs := cliFlags("dict get", "NAME KEY", "Prints the value of KEY (a string key, as in Modal's CLI); None if it is not there.")
	pos, err := namedArgs(fs, args, 2, 2, "dict get needs NAME and KEY")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	d, err := c.DictFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	v, found, err := d.Get(ctx, gust.PickleString(pos[1]))
	if err != nil {
		return err
	}
	if !found {
		fmt.Println("None")
		return nil
	}
	fmt.Println(showValue(v, false))
	return nil
}

func runDictItems(ctx context.Context, args []string) error {
	fs := cliFlags("dict items", "NAME [N] [--all] [--repr] [--json]", "Prints the first N entries (20 by default) of a Dict.")
	all := fs.Bool("all", false, "print every entry (may be slow)")
	fs.BoolVar(all, "a", false, "same as --all")
	repr := fs.Bool("repr", false, "show keys and values with repr()")
	fs.BoolVar(repr, "r", false, "same as --repr")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := namedArgs(fs, args, 1, 2, "dict items needs NAME and at most N")
	if err != nil {
		return err
	}
	n := 20
	if len(pos) == 2 {
		if n, err = strconv.Atoi(pos[1]); err != nil || n < 0 {
			return fmt.Errorf("N must be a whole number, got %q", pos[1])
		}
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	d, err := c.DictFromName(ctx, pos[0], false)
	if err != nil {
		return err
	}
	var rows [][]string
	var js []any
	i := 0
	for e, err := range d.Entries(ctx, true) {
		if err != nil {
			return err
		}
		i++
		if *asJSON {
			js = append(js, []any{jsonValue(e.Key), jsonValue(e.Value)})
			continue
		}
		if !*all && i > n {
			rows = append(rows, []string{"...", "..."})
			break
		}
		rows = append(rows, []string{truncate(showValue(e.Key, *repr)), truncate(showValue(e.Value, *repr))})
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(js)
	}
	return printTable(os.Stdout, []string{"Key", "Value"}, rows, false)
}

func runDictDelete(ctx context.Context, args []string) error {
	fs := cliFlags("dict delete", "NAME [--allow-missing] [--yes]", "Deletes a named Dict and all of its entries.")
	allowMissing := fs.Bool("allow-missing", false, "no error if the Dict does not exist")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 1, 1, "dict delete needs NAME")
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to irrevocably delete the Dict '%s'?", pos[0])); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	return c.DeleteDict(ctx, pos[0], *allowMissing)
}
