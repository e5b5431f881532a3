package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/sandbox"
)

// openDir opens the store gust.db in dir with opts, closed at the end of the test unless the
// test closes it itself.
func openDir(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	st, err := OpenSQLite(filepath.Join(dir, "gust.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // a second Close (after the test's) reports nothing useful
	return st
}

func closeStore(t *testing.T, st *Store) {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatalf("closing the store: %v", err)
	}
}

// unique is a value that appears nowhere unless the test put it there.
func unique(what string) string { return fmt.Sprintf("%s-%d", what, time.Now().UnixNano()) }

// assertNotInFiles fails if any file in dir (the database, its WAL and shared memory) holds one
// of values in the clear.
func assertNotInFiles(t *testing.T, dir string, values ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %q in the clear", e.Name(), v)
			}
		}
	}
}

// inlineFunction is a function with a named and an inline secret.
func inlineFunction(id, value string) function.Function {
	return function.Function{ID: id, AppID: "ap-1", Name: "f", Mode: function.ModeDeployed, State: function.StateActive,
		Spec:      function.Spec{Name: "f", Secrets: []function.SecretRef{{Name: "api"}, {Env: map[string]string{"INLINE": value}}}},
		CreatedAt: time.Now().UTC()}
}

// TestSecretsSealedAtRest: no secret value reaches the database's files in the clear, while the
// store is open (the WAL) or after: named secrets, functions' inline secrets, and the secret
// environment of a function container's record; and each reads back.
func TestSecretsSealedAtRest(t *testing.T) {
	dir, ctx := t.TempDir(), context.Background()
	named, inline, inRow := unique("named"), unique("inline"), unique("row")
	st := openDir(t, dir)
	if _, err := st.PutSecret(ctx, "ws-default", "api", map[string]string{"API_KEY": named}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutSecret(ctx, "ws-default", "api", map[string]string{"API_KEY": named, "OTHER": "x"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{inlineFunction("fu-1", inline)}, true); err != nil {
		t.Fatal(err)
	}
	if err := st.SetFunctionState(ctx, "fu-1", function.StateStopped); err != nil {
		t.Fatal(err)
	}
	sb := sandbox.Sandbox{ID: "sb-1", AppID: "ap-1", FunctionID: "fu-1", Status: sandbox.Running, CreatedAt: time.Now(),
		Env: map[string]string{"PLAIN": "p"}, SecretEnv: map[string]string{"API_KEY": inRow}}
	if err := st.InsertSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	assertNotInFiles(t, dir, named, inline, inRow)

	sec, err := st.GetSecret(ctx, "ws-default", "api")
	if err != nil || sec.Env["API_KEY"] != named || strings.Join(sec.Keys, ",") != "API_KEY,OTHER" {
		t.Fatalf("GetSecret = %v keys %v, %v", sec.Env, sec.Keys, err)
	}
	fn, err := st.GetFunction(ctx, "fu-1")
	if err != nil || fn.State != function.StateStopped || fn.Spec.Secrets[1].Env["INLINE"] != inline || fn.Spec.Secrets[0].Name != "api" {
		t.Fatalf("GetFunction = %+v, %v", fn.Spec.Secrets, err)
	}
	row, err := st.GetSandbox(ctx, "sb-1")
	if err != nil || row.SecretEnv != nil || row.Env["PLAIN"] != "p" {
		t.Fatalf("GetSandbox = env %v secret env %v, %v", row.Env, row.SecretEnv, err)
	}
	var env string
	if err := st.db.QueryRow(`SELECT env FROM secrets WHERE name = 'api'`).Scan(&env); err != nil || !strings.HasPrefix(env, envelopePrefix) {
		t.Fatalf("the stored env is %q (%v), want an envelope", env, err)
	}
	closeStore(t, st)
	assertNotInFiles(t, dir, named, inline, inRow)
}

// TestSecretKeyFile: the key file is made 0600 with 32 bytes, read back the same, and refused
// when others may read it or it is not a key.
func TestSecretKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := KeyPath(dir)
	k, created, err := LoadOrCreateSecretKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateSecretKey = created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	again, created, err := LoadOrCreateSecretKey(path)
	if err != nil || created || again != k {
		t.Fatalf("second LoadOrCreateSecretKey: created %v, same %v, %v", created, again == k, err)
	}
	if s := fmt.Sprintf("%v %+v %#v %s", k, k, k, k); strings.Count(s, "hidden") != 4 {
		t.Errorf("a key prints as %q", s)
	}
	tests := []struct {
		name    string
		mode    fs.FileMode
		size    int
		wantErr string
	}{
		{"group readable", 0o640, KeySize, "chmod 600"},
		{"world readable", 0o604, KeySize, "chmod 600"},
		{"short", 0o600, 16, "holds 16 bytes, not 32"},
		{"long", 0o600, 33, "holds 33 bytes, not 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), KeyFileName)
			if err := os.WriteFile(p, make([]byte, tt.size), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			if _, err := ReadSecretKey(p); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadSecretKey = %v, want %q", err, tt.wantErr)
			}
			if _, err := OpenSQLite(filepath.Join(filepath.Dir(p), "gust.db")); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("OpenSQLite = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := WriteSecretKey(path, k, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("WriteSecretKey over an existing key without replace: %v", err)
	}
}

// TestSecretWrongKey: a database opens only with the key its secrets were sealed with; a
// missing key file is not replaced by a new one.
func TestSecretWrongKey(t *testing.T) {
	dir, ctx := t.TempDir(), context.Background()
	value := unique("v")
	st := openDir(t, dir)
	if _, err := st.PutSecret(ctx, "ws-default", "api", map[string]string{"K": value}, false); err != nil {
		t.Fatal(err)
	}
	closeStore(t, st)
	other, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenSQLite(filepath.Join(dir, "gust.db"), WithSecretKey(other))
	if !errors.Is(err, ErrWrongSecretKey) || !strings.Contains(err.Error(), "secret api") || strings.Contains(err.Error(), value) {
		t.Fatalf("opening with another key: %v; want ErrWrongSecretKey naming the secret", err)
	}
	if err := os.Rename(KeyPath(dir), KeyPath(dir)+".saved"); err != nil {
		t.Fatal(err)
	}
	_, err = OpenSQLite(filepath.Join(dir, "gust.db"))
	if !errors.Is(err, ErrWrongSecretKey) || !strings.Contains(err.Error(), "there was no secret key") {
		t.Fatalf("opening without the key file: %v", err)
	}
	if _, err := os.Stat(KeyPath(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed open left a new key file: %v", err)
	}
	if err := os.Rename(KeyPath(dir)+".saved", KeyPath(dir)); err != nil {
		t.Fatal(err)
	}
	st = openDir(t, dir)
	if sec, err := st.GetSecret(ctx, "ws-default", "api"); err != nil || sec.Env["K"] != value {
		t.Fatalf("with its key back: %v, %v", sec.Env, err)
	}
}

// TestSecretTampered: an altered envelope, or one moved onto another secret, does not open;
// the error names the secret and not a value; the other secrets still read.
func TestSecretTampered(t *testing.T) {
	dir, ctx := t.TempDir(), context.Background()
	st := openDir(t, dir)
	for _, n := range []string{"a", "b", "c", "ok"} {
		if _, err := st.PutSecret(ctx, "ws-default", n, map[string]string{"K": "value-of-" + n}, false); err != nil {
			t.Fatal(err)
		}
	}
	envOf := func(name string) string {
		var env string
		if err := st.db.QueryRow(`SELECT env FROM secrets WHERE name = ?`, name).Scan(&env); err != nil {
			t.Fatal(err)
		}
		return env
	}
	set := func(name, env string) {
		if _, err := st.db.Exec(`UPDATE secrets SET env = ? WHERE name = ?`, env, name); err != nil {
			t.Fatal(err)
		}
	}
	a := envOf("a")
	flipped := []byte(a)
	i := len(envelopePrefix) + 20
	flipped[i] ^= 'A' ^ 'B' // a base64 letter stays one
	set("a", string(flipped))
	set("b", a) // a's envelope, moved
	for _, n := range []string{"a", "b"} {
		_, err := st.GetSecret(ctx, "ws-default", n)
		if !errors.Is(err, ErrWrongSecretKey) || !strings.Contains(err.Error(), fmt.Sprintf("secret %q", n)) || strings.Contains(err.Error(), "value-of") {
			t.Fatalf("reading altered secret %s: %v", n, err)
		}
	}
	if _, err := st.ListSecrets(ctx, "ws-default"); !errors.Is(err, ErrWrongSecretKey) {
		t.Fatalf("ListSecrets with an altered secret: %v", err)
	}
	set("c", "gust-aead-v9:AAAA")
	if _, err := st.GetSecret(ctx, "ws-default", "c"); err == nil || !strings.Contains(err.Error(), "newer gust") {
		t.Fatalf("reading a newer envelope: %v", err)
	}
	if sec, err := st.GetSecret(ctx, "ws-default", "ok"); err != nil || sec.Env["K"] != "value-of-ok" {
		t.Fatalf("an intact secret beside altered ones: %v, %v", sec.Env, err)
	}
	// A key that opens some values is the right key: the store opens, the altered ones fail
	// and can be replaced.
	closeStore(t, st)
	st = openDir(t, dir)
	if _, err := st.PutSecret(ctx, "ws-default", "a", map[string]string{"K": "new"}, true); err != nil {
		t.Fatalf("overwriting an altered secret: %v", err)
	}
	if sec, err := st.GetSecret(ctx, "ws-default", "a"); err != nil || sec.Env["K"] != "new" {
		t.Fatalf("after overwriting: %v, %v", sec.Env, err)
	}
}

// TestPlaintextSecretsMigrated: a database an older gust wrote (no key file, secret values in
// the clear in secrets, functions and function containers' rows) is sealed when it opens, and
// nothing in the clear stays in its files.
func TestPlaintextSecretsMigrated(t *testing.T) {
	dir, ctx := t.TempDir(), context.Background()
	named, inline, inRow := unique("named"), unique("inline"), unique("row")
	closeStore(t, openDir(t, dir))
	if err := os.Remove(KeyPath(dir)); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	env := mustJSON(t, map[string]string{"API_KEY": named})
	fn := mustJSON(t, inlineFunction("fu-1", inline))
	fnRow := mustJSON(t, sandbox.Sandbox{ID: "sb-1", FunctionID: "fu-1", Status: sandbox.Finished, Env: map[string]string{"API_KEY": inRow}})
	sbRow := mustJSON(t, sandbox.Sandbox{ID: "sb-2", Status: sandbox.Running, Env: map[string]string{"MINE": "kept"}})
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DROP TABLE store_meta`, nil}, // an older gust had none
		{`INSERT INTO secrets(id, name, env, created_at) VALUES ('st-1', 'api', ?, '2025-01-01T00:00:00Z')`, []any{env}},
		{`INSERT INTO functions(id, app_id, name, mode, state, created_at, doc) VALUES ('fu-1', 'ap-1', 'f', 'deployed', 'active', '2025-01-01T00:00:00Z', ?)`, []any{fn}},
		{`INSERT INTO sandboxes(id, app_id, status, created_at, doc) VALUES ('sb-1', 'ap-1', 'finished', '2025-01-01T00:00:00Z', ?)`, []any{fnRow}},
		{`INSERT INTO sandboxes(id, app_id, status, created_at, doc) VALUES ('sb-2', 'ap-1', 'running', '2025-01-01T00:00:00Z', ?)`, []any{sbRow}},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	st := openDir(t, dir)
	assertNotInFiles(t, dir, named, inline, inRow)
	if sec, err := st.GetSecret(ctx, "ws-default", "api"); err != nil || sec.Env["API_KEY"] != named {
		t.Fatalf("the migrated secret reads %v, %v", sec.Env, err)
	}
	if f, err := st.GetFunction(ctx, "fu-1"); err != nil || f.Spec.Secrets[1].Env["INLINE"] != inline {
		t.Fatalf("the migrated function reads %+v, %v", f.Spec.Secrets, err)
	}
	if sb, err := st.GetSandbox(ctx, "sb-1"); err != nil || sb.Env != nil || sb.FunctionID != "fu-1" {
		t.Fatalf("the function container's row: env %v, %v", sb.Env, err)
	}
	if sb, err := st.GetSandbox(ctx, "sb-2"); err != nil || sb.Env["MINE"] != "kept" {
		t.Fatalf("a sandbox's own env: %v, %v", sb.Env, err)
	}
	var stored string
	if err := st.db.QueryRow(`SELECT env FROM secrets WHERE name = 'api'`).Scan(&stored); err != nil || !strings.HasPrefix(stored, envelopePrefix) {
		t.Fatalf("the stored env is %q (%v), want an envelope", stored, err)
	}
	// The environment of function containers is dropped once: rows written since keep theirs.
	if err := st.InsertSandbox(ctx, sandbox.Sandbox{ID: "sb-3", FunctionID: "fu-1", Status: sandbox.Running, Env: map[string]string{"GUST_FUNCTION_ID": "fu-1"}}); err != nil {
		t.Fatal(err)
	}
	closeStore(t, st)
	assertNotInFiles(t, dir, named, inline, inRow)
	st = openDir(t, dir)
	if sb, err := st.GetSandbox(ctx, "sb-3"); err != nil || sb.Env["GUST_FUNCTION_ID"] != "fu-1" {
		t.Fatalf("a later open dropped a new row's env: %v, %v", sb.Env, err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRotateSecretKey: a rotation seals every value under the new key, after which the old key
// opens nothing; a rotation that meets a value it cannot open changes nothing.
func TestRotateSecretKey(t *testing.T) {
	dir, ctx := t.TempDir(), context.Background()
	st := openDir(t, dir)
	old, err := ReadSecretKey(KeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := st.PutSecret(ctx, "ws-default", n, map[string]string{"K": "value-of-" + n}, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{inlineFunction("fu-1", "inline-value")}, false); err != nil {
		t.Fatal(err)
	}
	before := storedValues(t, st)
	next, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	n, err := st.RotateSecretKey(ctx, next)
	if err != nil || n != 3 {
		t.Fatalf("RotateSecretKey = %d, %v; want 3 records", n, err)
	}
	after := storedValues(t, st)
	for k, v := range before {
		if after[k] == v {
			t.Errorf("%s was not sealed again", k)
		}
	}
	checkReads := func(st *Store) {
		t.Helper()
		if sec, err := st.GetSecret(ctx, "ws-default", "b"); err != nil || sec.Env["K"] != "value-of-b" {
			t.Fatalf("GetSecret: %v, %v", sec.Env, err)
		}
		if f, err := st.GetFunction(ctx, "fu-1"); err != nil || f.Spec.Secrets[1].Env["INLINE"] != "inline-value" {
			t.Fatalf("GetFunction: %+v, %v", f.Spec.Secrets, err)
		}
	}
	checkReads(st)
	closeStore(t, st)
	if _, err := OpenSQLite(filepath.Join(dir, "gust.db"), WithSecretKey(old)); !errors.Is(err, ErrWrongSecretKey) {
		t.Fatalf("the old key after a rotation: %v", err)
	}
	st = openDir(t, dir, WithSecretKey(next))
	checkReads(st)

	if _, err := st.db.Exec(`UPDATE secrets SET env = ? WHERE name = 'a'`, after["secret a"][:len(after["secret a"])-4]+"AAAA"); err != nil {
		t.Fatal(err)
	}
	before = storedValues(t, st)
	third, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RotateSecretKey(ctx, third); !errors.Is(err, ErrWrongSecretKey) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("rotating over an altered secret: %v", err)
	}
	if after := storedValues(t, st); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("a failed rotation changed the database")
	}
	checkReads(st)
}

// storedValues reads the stored secrets and functions' records as they are.
func storedValues(t *testing.T, st *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	rows, err := st.db.Query(`SELECT 'secret ' || name, env FROM secrets UNION ALL SELECT 'function ' || id, doc FROM functions`)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRows(rows)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
