package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
	"golang.org/x/term"
)

func init() {
	register(&command{name: "token new", summary: "make a token for your workspace (its secret is shown once)", run: withTerm(runTokenNew)})
	register(&command{name: "token list", summary: "list your workspace's tokens", run: withTerm(runTokenList)})
	register(&command{name: "token revoke", summary: "revoke tokens", run: withTerm(runTokenRevoke)})
	register(&command{name: "token set", summary: "store a token id and secret in the client config, as a profile", run: withTerm(runTokenSet)})
}

// tokenSecretFlagWarning is printed when a secret is given on the command line.
const tokenSecretFlagWarning = "gust: warning: --token-secret puts the secret on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline); pass --token-secret - and the secret on stdin, or set GUST_TOKEN_SECRET, instead\n"

func runTokenNew(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("token new", "[--name N] [--role owner|member|readonly] [--expires-in DUR] [--workspace ID] [--set-profile P]",
		"Makes a token in your workspace (you need the owner role; the operator may name another workspace).\n"+
			"Prints its id and secret; the secret is never shown again. With --set-profile the token is stored\n"+
			"in the client config file as that profile (with the server URL in use) and its secret is not printed.")
	var opts gust.TokenOptions
	fs.StringVar(&opts.Name, "name", "", "a name for the token, e.g. ci")
	fs.StringVar(&opts.Role, "role", "", "owner, member or readonly (default member)")
	fs.Var(durationFlag{&opts.ExpiresIn}, "expires-in", "make the token expire after this long, e.g. 12h or 30d (default never)")
	fs.StringVar(&opts.WorkspaceID, "workspace", "", "the workspace id to make the token in (operator only; default yours)")
	setProfile := fs.String("set-profile", "", "store the token in the client config as this profile")
	activate := fs.Bool("activate", false, "with --set-profile: make that profile the active one")
	asJSON := fs.Bool("json", false, "print the token as JSON")
	if err := noPositional(fs, args, "token new"); err != nil {
		return err
	}
	if opts.Role != "" && opts.Role != gust.RoleOwner && opts.Role != gust.RoleMember && opts.Role != gust.RoleReadonly {
		return fmt.Errorf("--role %q: want owner, member or readonly", opts.Role)
	}
	c, cfg, err := loadClient()
	if err != nil {
		return err
	}
	tok, err := c.CreateToken(ctx, opts)
	if err != nil {
		return err
	}
	return showNewToken(t, tok, cfg, *setProfile, *activate, *asJSON)
}

// showNewToken prints a token just made, or stores it as a profile when profile is not empty.
func showNewToken(t cliIO, tok *gust.Token, cfg gust.Config, profile string, activate, asJSON bool) error {
	if profile != "" {
		path, err := gust.DefaultConfigPath()
		if err != nil {
			return err
		}
		if err := gust.SaveProfile(path, profile, gust.Profile{ServerURL: cfg.ServerURL, TokenID: tok.ID, TokenSecret: tok.Secret,
			TLSFingerprint: cfg.TLSFingerprint, TLSCAFile: cfg.TLSCAFile}, activate); err != nil {
			return fmt.Errorf("token %s was made but not stored (revoke it with `gust token revoke %s`): %w", tok.ID, tok.ID, err)
		}
		tok.Secret = ""
		if asJSON {
			return printJSON(t.out, tok)
		}
		fmt.Fprintf(t.out, "token %s (workspace %s, role %s) stored as profile %q in %s\n", tok.ID, tok.WorkspaceID, tok.Role, profile, path)
		if !activate {
			fmt.Fprintf(t.out, "use it with GUST_PROFILE=%s, or `gust profile activate %s`\n", profile, profile)
		}
		return nil
	}
	if asJSON {
		return printJSON(t.out, tok)
	}
	fmt.Fprintf(t.out, "token_id:     %s\ntoken_secret: %s\n", tok.ID, tok.Secret)
	fmt.Fprintf(t.err, "workspace %s, role %s, expires %s. The secret is shown only now: keep it, e.g. with\n"+
		"`gust token set --token-id %s --token-secret -` (secret on stdin), or GUST_TOKEN_ID and GUST_TOKEN_SECRET.\n",
		tok.WorkspaceID, tok.Role, when(tok.ExpiresAt), tok.ID)
	return nil
}

// noPositional parses flags and refuses positional arguments.
func noPositional(fs *flag.FlagSet, args []string, name string) error {
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fs.Usage()
		return fmt.Errorf("%s takes no arguments, got %q", name, pos)
	}
	return nil
}

func runTokenList(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("token list", "[--json]", "Lists your workspace's tokens (you need the owner role). Secrets are never shown.")
	asJSON := fs.Bool("json", false, "print the tokens as JSON")
	if err := noPositional(fs, args, "token list"); err != nil {
		return err
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	toks, err := c.ListTokens(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, toks)
	}
	return printTokens(t.out, toks, time.Now())
}

// printTokens writes the table of `gust token list`, newest first.
func printTokens(w io.Writer, toks []*gust.Token, now time.Time) error {
	toks = append([]*gust.Token(nil), toks...)
	sort.SliceStable(toks, func(i, j int) bool { return toks[i].CreatedAt.After(toks[j].CreatedAt) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOKEN ID\tNAME\tROLE\tSTATE\tCREATED\tEXPIRES\tLAST USED")
	for _, tok := range toks {
		state := "active"
		switch {
		case tok.RevokedAt != nil:
			state = "revoked"
		case tok.ExpiresAt != nil && !tok.ExpiresAt.After(now):
			state = "expired"
		}
		last := "-"
		if tok.LastUsedAt != nil {
			last = ago(now, *tok.LastUsedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", tok.ID, orDash(tok.Name), tok.Role, state, ago(now, tok.CreatedAt), when(tok.ExpiresAt), last)
	}
	return tw.Flush()
}

func runTokenRevoke(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("token revoke", "TOKEN_ID...", "Revokes tokens (you need the owner role). A revoked token is refused at once.")
	ids, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		fs.Usage()
		return errors.New("token revoke needs at least one token id (tk-...; see `gust token list`)")
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if _, err := c.RevokeToken(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(t.out, "revoked %s\n", id)
	}
	return errors.Join(errs...)
}

func runTokenSet(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("token set", "--token-id ID [--token-secret -] [--profile P] [--server-url URL]",
		"Stores a token id and secret in the client config file as a profile (default \"default\") and makes\n"+
			"it the active profile, after checking them with the server (GET /v1/whoami).\n"+
			"The secret comes from stdin with --token-secret - (or without the flag when GUST_TOKEN_SECRET is\n"+
			"unset), else from GUST_TOKEN_SECRET; --token-secret VALUE works but is unsafe: ps shows it to every user.")
	id := fs.String("token-id", os.Getenv("GUST_TOKEN_ID"), "the token id, tk-... (default $GUST_TOKEN_ID)")
	secretFlag := fs.String("token-secret", "", "- to read the secret from stdin (a VALUE here is visible to ps: avoid it)")
	profile := fs.String("profile", gust.DefaultProfile, "the profile to store the token as")
	serverURL := fs.String("server-url", "", "the server (default $GUST_SERVER_URL, else the profile's, else the one in use)")
	activate := fs.Bool("activate", true, "make the profile the active one")
	verify := fs.Bool("verify", true, "check the token with the server before storing it")
	tlsFingerprint := fs.String("tls-fingerprint", "", "pin an https server's certificate (SHA-256, as `gust server` prints); default: the profile's own, or the one in use, for the same server")
	if err := noPositional(fs, args, "token set"); err != nil {
		return err
	}
	if *id == "" {
		fs.Usage()
		return errors.New("token set needs --token-id (or GUST_TOKEN_ID)")
	}
	secret, err := tokenSecret(*secretFlag, t)
	if err != nil {
		return err
	}
	path, err := gust.DefaultConfigPath()
	if err != nil {
		return err
	}
	url, err := profileServerURL(path, *profile, *serverURL)
	if err != nil {
		return err
	}
	p := gust.Profile{ServerURL: url, TokenID: *id, TokenSecret: secret}
	p.TLSFingerprint, p.TLSCAFile = profileTLS(path, *profile, url, *tlsFingerprint)
	who := ""
	if *verify {
		c, err := gust.NewClient(gust.Config{ServerURL: url, TokenID: *id, TokenSecret: secret, TLSFingerprint: p.TLSFingerprint, TLSCAFile: p.TLSCAFile})
		if err != nil {
			return err
		}
		w, err := c.Whoami(ctx)
		if err != nil {
			return fmt.Errorf("checking token %s with %s (not stored; --verify=false stores it anyway): %w", *id, c.ServerURL(), err)
		}
		who = fmt.Sprintf(" (workspace %s, role %s)", w.WorkspaceName, w.Role)
	}
	if err := gust.SaveProfile(path, *profile, p, *activate); err != nil {
		return err
	}
	fmt.Fprintf(t.out, "token %s%s stored as profile %q in %s\n", *id, who, *profile, path)
	return nil
}

// tokenSecret returns the secret `gust token set` stores: from stdin for "-" (or no flag and
// no GUST_TOKEN_SECRET), else GUST_TOKEN_SECRET, else the flag's value, with a warning.
func tokenSecret(flagValue string, t cliIO) (string, error) {
	switch {
	case flagValue == "-", flagValue == "" && os.Getenv("GUST_TOKEN_SECRET") == "":
		if f, ok := t.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprint(t.err, "token secret (ts-..., not echoed): ")
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(t.err)
			if err != nil {
				return "", fmt.Errorf("reading the token secret: %w", err)
			}
			if s := strings.TrimSpace(string(b)); s != "" {
				return s, nil
			}
			return "", errors.New("no token secret given")
		}
		line, err := bufio.NewReader(io.LimitReader(t.in, 4096)).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("reading the token secret from stdin: %w", err)
		}
		s := strings.TrimSpace(line)
		if s == "" {
			return "", errors.New("no token secret on stdin: pipe it in (e.g. `gust token set --token-id tk-... --token-secret - < file`) or set GUST_TOKEN_SECRET")
		}
		return s, nil
	case flagValue == "":
		return os.Getenv("GUST_TOKEN_SECRET"), nil
	}
	if _, err := io.WriteString(t.err, tokenSecretFlagWarning); err != nil {
		return "", fmt.Errorf("writing a warning about --token-secret: %w", err)
	}
	return flagValue, nil
}

// profileServerURL is the server URL to store in a profile: the flag, else GUST_SERVER_URL,
// else the profile's own, else the one in use.
func profileServerURL(path, profile, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv("GUST_SERVER_URL"); v != "" {
		return v, nil
	}
	if f, err := gust.ReadConfigFile(path); err == nil {
		if p, ok := f.Profiles[profile]; ok && p.ServerURL != "" {
			return p.ServerURL, nil
		}
	}
	cfg, err := gust.LoadConfig()
	if err != nil {
		return "", fmt.Errorf("finding the server for profile %q (give --server-url): %w", profile, err)
	}
	return cfg.ServerURL, nil
}

// profileTLS is how a profile stored by `gust token set` verifies an https server: the flag's
// fingerprint, else the TLS settings the profile already has, else those in use (environment,
// active profile), each only when it is for the same server URL.
func profileTLS(path, profile, url, flagFingerprint string) (fingerprint, caFile string) {
	if flagFingerprint != "" {
		return flagFingerprint, ""
	}
	if f, err := gust.ReadConfigFile(path); err == nil {
		if p, ok := f.Profiles[profile]; ok && p.ServerURL == url && (p.TLSFingerprint != "" || p.TLSCAFile != "") {
			return p.TLSFingerprint, p.TLSCAFile
		}
	}
	if cfg, err := gust.LoadConfig(); err == nil && cfg.ServerURL == url {
		return cfg.TLSFingerprint, cfg.TLSCAFile
	}
	return "", ""
}
