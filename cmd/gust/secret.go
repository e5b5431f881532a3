package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "secret create", summary: "store a secret: named environment variables for functions", run: runSecretCreate})
	register(&command{name: "secret list", summary: "list secrets and their keys (never their values)", run: runSecretList})
	register(&command{name: "secret delete", summary: "delete secrets", run: runSecretDelete})
}

func runSecretCreate(ctx context.Context, args []string) error {
	fs := cliFlags("secret create", "NAME KEY=VALUE... [--force]",
		"Stores KEY=VALUE pairs under NAME. Functions that name the secret (secrets=[gust.Secret.from_name(NAME)])\n"+
			"get them as environment variables. The values are never shown again.")
	force := fs.Bool("force", false, "replace the secret if it exists")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	name, env, err := secretArgs(pos)
	if err != nil {
		fs.Usage()
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	s, err := c.CreateSecret(ctx, name, env, *force)
	if err != nil {
		return err
	}
	keys := s.Keys
	if len(keys) == 0 {
		keys = sortedMapKeys(env)
	}
	fmt.Printf("secret %s: %s\n", s.Name, strings.Join(keys, ", "))
	return nil
}

// secretArgs reads NAME KEY=VALUE... Keys are environment variable names, each given once.
func secretArgs(pos []string) (string, map[string]string, error) {
	if len(pos) < 2 {
		return "", nil, errors.New("secret create needs a name and at least one KEY=VALUE, e.g. `gust secret create openai OPENAI_API_KEY=sk-...`")
	}
	name, pairs := pos[0], pos[1:]
	if strings.Contains(name, "=") {
		return "", nil, fmt.Errorf("the secret's name comes first, before KEY=VALUE pairs: got %q", name)
	}
	env := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return "", nil, fmt.Errorf("%q is not KEY=VALUE: write each variable as KEY=VALUE (quote values with spaces)", p)
		}
		if !isEnvName(k) {
			return "", nil, fmt.Errorf("%q is not a valid environment variable name: use letters, digits and _, not starting with a digit", k)
		}
		if _, dup := env[k]; dup {
			return "", nil, fmt.Errorf("%s is given twice", k)
		}
		env[k] = v
	}
	return name, env, nil
}

func isEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func sortedMapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func runSecretList(ctx context.Context, args []string) error {
	fs := cliFlags("secret list", "", "Lists secrets: their names and keys. Their values are never shown.")
	if pos, _, err := parseArgs(fs, args, -1); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("secret list takes no arguments, got %q", pos)
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	secrets, err := c.ListSecrets(ctx)
	if err != nil {
		return err
	}
	return printSecrets(os.Stdout, secrets, time.Now())
}

// printSecrets writes the table of `gust secret list`, by name.
func printSecrets(w io.Writer, secrets []*gust.Secret, now time.Time) error {
	secrets = append([]*gust.Secret(nil), secrets...)
	sort.Slice(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEYS\tCREATED")
	for _, s := range secrets {
		keys := append([]string(nil), s.Keys...)
		sort.Strings(keys)
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, orDash(strings.Join(keys, ", ")), ago(now, s.CreatedAt))
	}
	return tw.Flush()
}

func runSecretDelete(ctx context.Context, args []string) error {
	fs := cliFlags("secret delete", "NAME...", "Deletes secrets by name.")
	names, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fs.Usage()
		return errors.New("secret delete needs at least one secret name")
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := c.DeleteSecret(ctx, n); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(n)
	}
	return errors.Join(errs...)
}
