// Package store keeps gust's durable state: apps, images, sandboxes (function containers among
// them), functions, their calls and inputs (the durable input queue), secrets and the apps' logs.
// Workers are not stored: they register again when the server restarts. It is the only package
// that speaks SQL. The embedded default is SQLite (pure Go, WAL); state that must survive a
// restart lives here and nowhere else. Secret values are sealed at rest with a key kept beside
// the database (secretkey.go).
//
// Imported by the control plane (internal/api, internal/fleet, internal/dispatch,
// internal/imagebuild and internal/server, which assembles them) and by cmd/gust, which opens
// it. Never by the worker, gust-init or the SDKs (internal/depcheck enforces this).
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store is the database.
type Store struct {
	db *sql.DB

	// keyMu guards seal: methods that seal or open secret values hold it for reading
	// (holdKey), RotateSecretKey for writing.
	keyMu sync.RWMutex
	seal  *sealer

	kvWaits notifier // wakes Queue gets and puts blocked on a partition (queues.go)
}

// Option configures OpenSQLite.
type Option func(*options)

type options struct {
	key     *SecretKey
	keyFile string
}

// WithSecretKey seals secrets with key.
func WithSecretKey(key SecretKey) Option { return func(o *options) { o.key = &key } }

// WithKeyFile seals secrets with the key in the file at path, made there on first open. The
// default is KeyFileName beside the database.
func WithKeyFile(path string) Option { return func(o *options) { o.keyFile, o.key = path, nil } }

// App is a named group of sandboxes and functions.
type App struct {
	ID          string    `json:"app_id"`
	WorkspaceID string    `json:"workspace_id"`
	Name        string    `json:"name"`
	CreatedAt   time.Time `json:"created_at"`
}

const schema = `
CREATE TABLE IF NOT EXISTS apps (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL DEFAULT 'ws-default',
	name TEXT NOT NULL,
	created_at TEXT NOT NULL,
	UNIQUE(workspace_id, name)
);
CREATE TABLE IF NOT EXISTS images (
	id TEXT PRIMARY KEY,
	hash TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_hash ON images(hash);
CREATE TABLE IF NOT EXISTS sandboxes (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL DEFAULT 'ws-default',
	app_id TEXT NOT NULL,
	name TEXT,
	status TEXT NOT NULL,
	created_at TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandboxes_app ON sandboxes(app_id, status);
CREATE TABLE IF NOT EXISTS store_meta (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`

// OpenSQLite opens (creating if needed) the SQLite database at path. Secrets are sealed with
// the key in KeyFileName beside it, made on first open, unless an option says otherwise. A key
// that opens none of the database's sealed values is refused (ErrWrongSecretKey); values an
// older gust stored in the clear are sealed now.
func OpenSQLite(path string, opts ...Option) (*Store, error) {
	o := options{keyFile: KeyPath(filepath.Dir(path))}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if o.key != nil {
		return openSQLite(path, *o.key)
	}
	key, created, err := LoadOrCreateSecretKey(o.keyFile)
	if err != nil {
		return nil, err
	}
	st, err := openSQLite(path, key)
	if err != nil && created {
		// Nothing was sealed with the new key: leave no key file that would look like the
		// database's own.
		if errors.Is(err, ErrWrongSecretKey) {
			err = fmt.Errorf("%w (there was no secret key at %s: restore the one this database was written with)", err, o.keyFile)
		}
		if rerr := os.Remove(o.keyFile); rerr != nil {
			err = errors.Join(err, fmt.Errorf("store: remove the new secret key: %w", rerr))
		}
	}
	return st, err
}

func openSQLite(path string, key SecretKey) (*Store, error) {
	seal, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One writer at a time is SQLite's model; a single connection avoids SQLITE_BUSY churn.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema + functionsSchema + workspacesSchema + meteringSchema + budgetsSchema); err != nil {
		_ = db.Close() // best effort: the schema error is the one to report
		return nil, fmt.Errorf("store: create schema in %s: %w", path, err)
	}
	s := &Store{db: db, seal: seal}
	if err := s.migrateToWorkspaces(context.Background()); err != nil {
		_ = db.Close() // best effort: the migration's error is the one to report
		return nil, err
	}
	if err := s.migrateKV(context.Background()); err != nil {
		_ = db.Close() // best effort: the migration's error is the one to report
		return nil, err
	}
	if err := s.migrateWeb(context.Background()); err != nil {
		_ = db.Close() // best effort: the migration's error is the one to report
		return nil, err
	}
	if err := s.migrateVolumes(context.Background()); err != nil {
		_ = db.Close() // best effort: the migration's error is the one to report
		return nil, err
	}
	if err := s.prepareSecrets(context.Background()); err != nil {
		_ = db.Close() // best effort: the secrets' error is the one to report
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// LookupApp finds an app of workspace ws by name, creating it when create is set.
func (s *Store) LookupApp(ctx context.Context, ws, name string, create bool) (App, error) {
	a := App{WorkspaceID: ws}
	var created string
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created_at FROM apps WHERE workspace_id = ? AND name = ?`, ws, name).Scan(&a.ID, &a.Name, &created)
	if err == nil {
		a.CreatedAt, err = parseTime("app "+a.ID, created)
		return a, err
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("store: look up app %q: %w", name, err)
	}
	if !create {
		return a, errdefs.NotFound("app %q not found; create it with App.lookup(%q, create_if_missing=True)", name, name)
	}
	a = App{ID: ids.New(ids.App), WorkspaceID: ws, Name: name, CreatedAt: time.Now().UTC()}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO apps(id, workspace_id, name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(workspace_id, name) DO NOTHING`,
		a.ID, ws, a.Name, a.CreatedAt.Format(time.RFC3339Nano)); err != nil {
		return a, fmt.Errorf("store: create app %q: %w", name, err)
	}
	return s.LookupApp(ctx, ws, name, false)
}

// GetApp returns an app by ID.
func (s *Store) GetApp(ctx context.Context, id string) (App, error) {
	var a App
	var created string
	err := s.db.QueryRowContext(ctx, `SELECT id, workspace_id, name, created_at FROM apps WHERE id = ?`, id).Scan(&a.ID, &a.WorkspaceID, &a.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return a, errdefs.NotFound("app %q not found", id)
	}
	if err != nil {
		return a, fmt.Errorf("store: get app %q: %w", id, err)
	}
	a.CreatedAt, err = parseTime("app "+a.ID, created)
	return a, err
}

// ListApps returns the apps of workspace ws, oldest first.
func (s *Store) ListApps(ctx context.Context, ws string) ([]App, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, workspace_id, name, created_at FROM apps WHERE workspace_id = ? ORDER BY created_at`, ws)
	if err != nil {
		return nil, fmt.Errorf("store: list apps: %w", err)
	}
	defer closeRows(rows)
	apps := []App{}
	for rows.Next() {
		var a App
		var created string
		if err := rows.Scan(&a.ID, &a.WorkspaceID, &a.Name, &created); err != nil {
			return nil, fmt.Errorf("store: list apps: %w", err)
		}
		if a.CreatedAt, err = parseTime("app "+a.ID, created); err != nil {
			return nil, err
		}
		apps = append(apps, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list apps: %w", err)
	}
	return apps, nil
}

// PutImage records an image.
func (s *Store) PutImage(ctx context.Context, im image.Image) error {
	doc, err := json.Marshal(imageDoc{im, im.Hash, im.Layers})
	if err != nil {
		return fmt.Errorf("store: encode image %s: %w", im.ID, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO images(id, hash, doc) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc`, im.ID, im.Hash, string(doc))
	if err != nil {
		return fmt.Errorf("store: put image %s: %w", im.ID, err)
	}
	return nil
}

// imageDoc stores the fields Image hides from JSON.
type imageDoc struct {
	image.Image
	Hash   string   `json:"hash"`
	Layers []string `json:"layers"`
}

func decodeImage(doc string) (image.Image, error) {
	var d imageDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return image.Image{}, fmt.Errorf("store: corrupt image record: %w", err)
	}
	d.Image.Hash, d.Image.Layers = d.Hash, d.Layers
	return d.Image, nil
}

// GetImage returns an image by ID.
func (s *Store) GetImage(ctx context.Context, id string) (image.Image, error) {
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM images WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return image.Image{}, errdefs.NotFound("image %q not found", id)
	}
	if err != nil {
		return image.Image{}, fmt.Errorf("store: get image %q: %w", id, err)
	}
	return decodeImage(doc)
}

// ImageByHash returns the image built from a definition hash, if any.
func (s *Store) ImageByHash(ctx context.Context, hash string) (image.Image, bool, error) {
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM images WHERE hash = ? LIMIT 1`, hash).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return image.Image{}, false, nil
	}
	if err != nil {
		return image.Image{}, false, fmt.Errorf("store: image by hash: %w", err)
	}
	im, err := decodeImage(doc)
	return im, err == nil, err
}

// ListImages returns the images workspace ws may use; every image when ws is "".
func (s *Store) ListImages(ctx context.Context, ws string) ([]image.Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT doc FROM images WHERE ? = '' OR id IN (SELECT image_id FROM image_owners WHERE workspace_id = ?) ORDER BY id`, ws, ws)
	if err != nil {
		return nil, fmt.Errorf("store: list images: %w", err)
	}
	defer closeRows(rows)
	out := []image.Image{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("store: list images: %w", err)
		}
		im, err := decodeImage(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list images: %w", err)
	}
	return out, nil
}

// InsertSandbox records a new sandbox. A name must be unique among the app's live sandboxes.
func (s *Store) InsertSandbox(ctx context.Context, sb sandbox.Sandbox) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: insert sandbox %s: %w", sb.ID, err)
	}
	defer rollback(tx)
	if sb.Name != nil {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM sandboxes WHERE app_id = ? AND name = ? AND status IN ('pending','running')`, sb.AppID, *sb.Name).Scan(&id)
		if err == nil {
			return errdefs.Conflict("a running sandbox named %q already exists in this app (%s); terminate it or choose another name", *sb.Name, id)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: insert sandbox %s: look up its name: %w", sb.ID, err)
		}
	}
	doc, err := json.Marshal(sb)
	if err != nil {
		return fmt.Errorf("store: encode sandbox %s: %w", sb.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sandboxes(id, workspace_id, app_id, name, status, created_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		sb.ID, sb.WorkspaceID, sb.AppID, sb.Name, string(sb.Status), sb.CreatedAt.Format(time.RFC3339Nano), string(doc)); err != nil {
		return fmt.Errorf("store: insert sandbox: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: insert sandbox %s: %w", sb.ID, err)
	}
	return nil
}

// UpdateSandbox writes a sandbox's whole record.
func (s *Store) UpdateSandbox(ctx context.Context, sb sandbox.Sandbox) error {
	doc, err := json.Marshal(sb)
	if err != nil {
		return fmt.Errorf("store: encode sandbox %s: %w", sb.ID, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sandboxes SET status = ?, name = ?, doc = ? WHERE id = ?`, string(sb.Status), sb.Name, string(doc), sb.ID)
	if err != nil {
		return fmt.Errorf("store: update sandbox %s: %w", sb.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: update sandbox %s: %w", sb.ID, err)
	} else if n == 0 {
		return errdefs.NotFound("sandbox %q not found", sb.ID)
	}
	return nil
}

// GetSandbox returns a sandbox by ID.
func (s *Store) GetSandbox(ctx context.Context, id string) (sandbox.Sandbox, error) {
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM sandboxes WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return sandbox.Sandbox{}, errdefs.NotFound("sandbox %q not found", id)
	}
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("store: get sandbox %q: %w", id, err)
	}
	var sb sandbox.Sandbox
	if err := json.Unmarshal([]byte(doc), &sb); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("store: corrupt sandbox record %s: %w", id, err)
	}
	if sb.WorkspaceID == "" {
		sb.WorkspaceID = auth.DefaultWorkspace // made before workspaces
	}
	return sb, nil
}

// SandboxFilter selects sandboxes to list.
type SandboxFilter struct {
	WorkspaceID     string // "" lists every workspace's: the control plane's own use, never a client's
	CreatedBy       string // a container's credential: only the sandboxes it made
	AppID           string
	Name            string
	Tags            map[string]string
	IncludeFinished bool
	// Functions includes function containers, which are left out otherwise.
	Functions bool
}

// ListSandboxes returns matching sandboxes, newest first.
func (s *Store) ListSandboxes(ctx context.Context, f SandboxFilter) ([]sandbox.Sandbox, error) {
	q := `SELECT doc FROM sandboxes WHERE (? = '' OR workspace_id = ?)`
	args := []any{f.WorkspaceID, f.WorkspaceID}
	if f.AppID != "" {
		q += ` AND app_id = ?`
		args = append(args, f.AppID)
	}
	if f.Name != "" {
		q += ` AND name = ?`
		args = append(args, f.Name)
	}
	if !f.IncludeFinished {
		q += ` AND status IN ('pending','running')`
	}
	q += ` ORDER BY created_at DESC`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list sandboxes: %w", err)
	}
	defer closeRows(rows)
	out := []sandbox.Sandbox{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("store: list sandboxes: %w", err)
		}
		var sb sandbox.Sandbox
		if err := json.Unmarshal([]byte(doc), &sb); err != nil {
			return nil, fmt.Errorf("store: list sandboxes: corrupt record: %w", err)
		}
		if sb.WorkspaceID == "" {
			sb.WorkspaceID = auth.DefaultWorkspace
		}
		if matchTags(sb.Tags, f.Tags) && (f.Functions || sb.FunctionID == "") && (f.CreatedBy == "" || sb.CreatedBy == f.CreatedBy) {
			out = append(out, sb)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list sandboxes: %w", err)
	}
	return out, nil
}

func matchTags(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// DeleteImage removes an image's record (its layers stay until a prune finds them unused).
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("store: delete image %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: delete image %s: %w", id, err)
	} else if n == 0 {
		return errdefs.NotFound("image %q not found", id)
	}
	return nil
}

// parseTime reads a timestamp the store wrote; what names the record, for the error.
func parseTime(what, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: corrupt time in %s: %w", what, err)
	}
	return t, nil
}

// rollback undoes a transaction that was not committed. Its error is dropped on purpose: after
// Commit it is always sql.ErrTxDone, and on a failed path the caller returns the error that
// matters (the transaction ends with its connection either way).
func rollback(tx *sql.Tx) { _ = tx.Rollback() }

// closeRows releases a result set. Its error is dropped on purpose: the loop's errors come from
// rows.Err, which every caller checks, and once Next has returned false the set is already
// closed and Close reports nothing; on an early return the caller's error is the one to report.
func closeRows(rows *sql.Rows) { _ = rows.Close() }

// closeStmt releases a prepared statement of a transaction. Its error is dropped on purpose:
// whether the writes happened is decided by Commit, whose error is returned.
func closeStmt(st *sql.Stmt) { _ = st.Close() }
