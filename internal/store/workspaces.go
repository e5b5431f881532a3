package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
)

// workspacesSchema holds the tenant boundary: workspaces and their quotas, tokens (hashes
// only), the audit log, and which workspaces may use which image (images are cached by
// content and shared on disk; a record is visible only to the workspaces that built or
// resolved it).
const workspacesSchema = `
CREATE TABLE IF NOT EXISTS workspaces (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	created_at TEXT NOT NULL,
	quotas TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS tokens (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL,
	name TEXT NOT NULL,
	role TEXT NOT NULL,
	kind TEXT NOT NULL,
	hash TEXT NOT NULL,
	container_id TEXT NOT NULL DEFAULT '',
	worker_id TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	expires_at TEXT,
	revoked_at TEXT,
	last_used_at TEXT
);
CREATE INDEX IF NOT EXISTS tokens_workspace ON tokens(workspace_id, kind);
CREATE TABLE IF NOT EXISTS audit (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	time TEXT NOT NULL,
	workspace_id TEXT NOT NULL,
	token_id TEXT NOT NULL,
	method TEXT NOT NULL,
	route TEXT NOT NULL,
	object TEXT NOT NULL,
	status INTEGER NOT NULL,
	error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_workspace ON audit(workspace_id, seq);
CREATE TABLE IF NOT EXISTS blob_owners (
	workspace_id TEXT NOT NULL,
	sum TEXT NOT NULL,
	size INTEGER NOT NULL,
	PRIMARY KEY (workspace_id, sum)
);
CREATE TABLE IF NOT EXISTS image_owners (
	workspace_id TEXT NOT NULL,
	image_id TEXT NOT NULL,
	PRIMARY KEY (workspace_id, image_id)
);
`

// migrateToWorkspaces brings a database from before workspaces into the default one: apps and
// secrets become unique per workspace (SQLite cannot drop a UNIQUE constraint, so those two
// tables are rebuilt), sandboxes get the column, and the default workspace may use every image.
func (s *Store) migrateToWorkspaces(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migrate to workspaces: %w", err)
	}
	defer rollback(tx)
	if _, err := tx.ExecContext(ctx, `INSERT INTO workspaces(id, name, created_at) VALUES (?, 'default', ?) ON CONFLICT DO NOTHING`,
		auth.DefaultWorkspace, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("store: make the default workspace: %w", err)
	}
	steps := []struct{ table, sql string }{
		{"apps", `ALTER TABLE apps RENAME TO apps_old;
			CREATE TABLE apps (id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL DEFAULT 'ws-default', name TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE(workspace_id, name));
			INSERT INTO apps(id, name, created_at) SELECT id, name, created_at FROM apps_old;
			DROP TABLE apps_old;`},
		{"secrets", `ALTER TABLE secrets RENAME TO secrets_old;
			CREATE TABLE secrets (id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL DEFAULT 'ws-default', name TEXT NOT NULL, env TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE(workspace_id, name));
			INSERT INTO secrets(id, name, env, created_at) SELECT id, name, env, created_at FROM secrets_old;
			DROP TABLE secrets_old;`},
		{"sandboxes", `ALTER TABLE sandboxes ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'ws-default';
			INSERT OR IGNORE INTO image_owners(workspace_id, image_id) SELECT 'ws-default', id FROM images;`},
		// Blobs uploaded before workspaces are not recorded: the default workspace claims
		// one again by uploading it (the SDKs upload what the server says it lacks).
	}
	for _, st := range steps {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'workspace_id'`, st.table).Scan(&n); err != nil {
			return fmt.Errorf("store: migrate %s to workspaces: %w", st.table, err)
		}
		if n > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, st.sql); err != nil {
			return fmt.Errorf("store: migrate %s to workspaces: %w", st.table, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS sandboxes_workspace ON sandboxes(workspace_id, status)`); err != nil {
		return fmt.Errorf("store: migrate to workspaces: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migrate to workspaces: %w", err)
	}
	return nil
}

// Quotas bound what a workspace may hold at once. Zero is no limit.
type Quotas struct {
	Sandboxes         int     `json:"sandboxes"`           // live sandboxes and function containers
	CPU               float64 `json:"cpu"`                 // cores requested by live containers
	MemoryMiB         int     `json:"memory_mib"`          // memory of live containers
	GPUs              int     `json:"gpus"`                // GPUs of live containers
	ImageDiskMiB      int     `json:"image_disk_mib"`      // blobs uploaded (add_local files, code)
	RequestsPerSecond float64 `json:"requests_per_second"` // API requests, with a burst of a second's worth (at least 10)
	KVStoreMiB        int     `json:"kv_store_mib"`        // contents of Dicts and Queues, as pickled
	VolumeMiB         int     `json:"volume_mib"`          // files in volumes (their current versions)
}

// Validate checks quotas a client sets.
func (q Quotas) Validate() error {
	if q.Sandboxes < 0 || q.CPU < 0 || q.MemoryMiB < 0 || q.GPUs < 0 || q.ImageDiskMiB < 0 || q.RequestsPerSecond < 0 || q.KVStoreMiB < 0 || q.VolumeMiB < 0 {
		return errdefs.Invalid("quotas must be 0 (no limit) or more")
	}
	return nil
}

// Workspace is a tenant: every object belongs to one.
type Workspace struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Quotas    Quotas    `json:"-"`
}

// CreateWorkspace makes a workspace; its name must be new.
func (s *Store) CreateWorkspace(ctx context.Context, name string) (Workspace, error) {
	if err := checkName("workspace", name); err != nil {
		return Workspace{}, err
	}
	w := Workspace{ID: ids.New(ids.Workspace), Name: name, CreatedAt: time.Now().UTC()}
	_, err := s.db.ExecContext(ctx, `INSERT INTO workspaces(id, name, created_at) VALUES (?, ?, ?)`, w.ID, name, w.CreatedAt.Format(time.RFC3339Nano))
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return Workspace{}, errdefs.Conflict("a workspace named %q exists already", name)
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("store: create workspace %q: %w", name, err)
	}
	return w, nil
}

// checkName refuses names that cannot be shown or typed back.
func checkName(what, name string) error {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, "/\x00 \t\n") {
		return errdefs.Invalid("%s name %q is not valid: use 1-64 characters without '/', spaces or NUL", what, name)
	}
	return nil
}

// GetWorkspace returns a workspace by ID.
func (s *Store) GetWorkspace(ctx context.Context, id string) (Workspace, error) {
	ws, err := s.workspaces(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Workspace{}, err
	}
	if len(ws) == 0 {
		return Workspace{}, errdefs.NotFound("workspace %q not found", id)
	}
	return ws[0], nil
}

// ListWorkspaces returns every workspace, oldest first.
func (s *Store) ListWorkspaces(ctx context.Context) ([]Workspace, error) {
	return s.workspaces(ctx, ``)
}

func (s *Store) workspaces(ctx context.Context, where string, args ...any) ([]Workspace, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_at, quotas FROM workspaces `+where+` ORDER BY created_at`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list workspaces: %w", err)
	}
	defer closeRows(rows)
	out := []Workspace{}
	for rows.Next() {
		var w Workspace
		var created, quotas string
		if err := rows.Scan(&w.ID, &w.Name, &created, &quotas); err != nil {
			return nil, fmt.Errorf("store: list workspaces: %w", err)
		}
		if w.CreatedAt, err = parseTime("workspace "+w.ID, created); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(quotas), &w.Quotas); err != nil {
			return nil, fmt.Errorf("store: workspace %s: corrupt quotas: %w", w.ID, err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list workspaces: %w", err)
	}
	return out, nil
}

// SetQuotas replaces a workspace's quotas.
func (s *Store) SetQuotas(ctx context.Context, id string, q Quotas) error {
	if err := q.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(q)
	if err != nil {
		return fmt.Errorf("store: encode quotas: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE workspaces SET quotas = ? WHERE id = ?`, string(b), id)
	if err != nil {
		return fmt.Errorf("store: set quotas of %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("workspace %q not found", id)
	}
	return nil
}

// PutToken stores a new token (its hash, never its secret).
func (s *Store) PutToken(ctx context.Context, t auth.Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens(id, workspace_id, name, role, kind, hash, container_id, worker_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, t.ID, t.WorkspaceID, t.Name, string(t.Role), string(t.Kind), t.Hash, t.ContainerID, t.WorkerID,
		t.CreatedAt.Format(time.RFC3339Nano), timeOrNil(t.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store: put token: %w", err)
	}
	return nil
}

func timeOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

const tokenColumns = `id, workspace_id, name, role, kind, hash, container_id, worker_id, created_at, expires_at, revoked_at, last_used_at`

func scanToken(row interface{ Scan(...any) error }) (auth.Token, error) {
	var t auth.Token
	var role, kind, created string
	var expires, revoked, used sql.NullString
	if err := row.Scan(&t.ID, &t.WorkspaceID, &t.Name, &role, &kind, &t.Hash, &t.ContainerID, &t.WorkerID, &created, &expires, &revoked, &used); err != nil {
		return t, err
	}
	t.Role, t.Kind = auth.Role(role), auth.Kind(kind)
	var err error
	if t.CreatedAt, err = parseTime("token "+t.ID, created); err != nil {
		return t, err
	}
	for _, f := range []struct {
		v   sql.NullString
		dst **time.Time
	}{{expires, &t.ExpiresAt}, {revoked, &t.RevokedAt}, {used, &t.LastUsedAt}} {
		if f.v.Valid {
			tm, err := parseTime("token "+t.ID, f.v.String)
			if err != nil {
				return t, err
			}
			*f.dst = &tm
		}
	}
	return t, nil
}

// GetToken returns a token by ID.
func (s *Store) GetToken(ctx context.Context, id string) (auth.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, errdefs.NotFound("token %q not found", id)
	}
	if err != nil {
		return t, fmt.Errorf("store: get token %s: %w", id, err)
	}
	return t, nil
}

// ListTokens returns the user tokens of workspace ws, newest first.
func (s *Store) ListTokens(ctx context.Context, ws string) ([]auth.Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE workspace_id = ? AND kind = ? ORDER BY created_at DESC`, ws, string(auth.User))
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	defer closeRows(rows)
	out := []auth.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken revokes a user token of workspace ws now.
func (s *Store) RevokeToken(ctx context.Context, ws, id string, now time.Time) (auth.Token, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND workspace_id = ? AND kind = ?`,
		now.UTC().Format(time.RFC3339Nano), id, ws, string(auth.User))
	if err != nil {
		return auth.Token{}, fmt.Errorf("store: revoke token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return auth.Token{}, errdefs.NotFound("token %q not found", id)
	}
	return s.GetToken(ctx, id)
}

// TouchToken records that a token was used.
func (s *Store) TouchToken(ctx context.Context, id string, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE tokens SET last_used_at = ? WHERE id = ?`, now.UTC().Format(time.RFC3339Nano), id); err != nil {
		return fmt.Errorf("store: touch token %s: %w", id, err)
	}
	return nil
}

// DeleteContainerTokens removes the credential of a container that ended. Container
// credentials are deleted, not revoked: one is made for every container start.
func (s *Store) DeleteContainerTokens(ctx context.Context, containerID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE kind = ? AND container_id = ?`, string(auth.Container), containerID); err != nil {
		return fmt.Errorf("store: delete the credential of container %s: %w", containerID, err)
	}
	return nil
}

// DeleteStaleContainerTokens removes the credentials of containers that are no longer live
// (those a restart left behind).
func (s *Store) DeleteStaleContainerTokens(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE kind = ? AND container_id NOT IN
		(SELECT id FROM sandboxes WHERE status IN ('pending','running'))`, string(auth.Container))
	if err != nil {
		return fmt.Errorf("store: delete stale container credentials: %w", err)
	}
	return nil
}

// DeleteWorkerTokens removes the credentials issued to workers named name: a worker that
// registers again gets a new one.
func (s *Store) DeleteWorkerTokens(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE kind = ? AND name = ?`, string(auth.Worker), name); err != nil {
		return fmt.Errorf("store: delete the credentials of worker %s: %w", name, err)
	}
	return nil
}

// AuditEntry is one state-changing call.
type AuditEntry struct {
	Time        time.Time `json:"time"`
	WorkspaceID string    `json:"workspace_id"`
	TokenID     string    `json:"token_id"`
	Method      string    `json:"method"`
	Route       string    `json:"route"`  // the route's pattern, e.g. /v1/sandboxes/{id}/terminate
	Object      string    `json:"object"` // the object named in the path, if any
	Status      int       `json:"status"`
	Error       string    `json:"error"`
}

// AppendAudit writes entries in one transaction.
func (s *Store) AppendAudit(ctx context.Context, es []AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: append audit: %w", err)
	}
	defer rollback(tx)
	st, err := tx.PrepareContext(ctx, `INSERT INTO audit(time, workspace_id, token_id, method, route, object, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("store: append audit: %w", err)
	}
	defer closeStmt(st)
	for _, e := range es {
		if _, err := st.ExecContext(ctx, e.Time.UTC().Format(time.RFC3339Nano), e.WorkspaceID, e.TokenID, e.Method, e.Route, e.Object, e.Status, e.Error); err != nil {
			return fmt.Errorf("store: append audit: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: append audit: %w", err)
	}
	return nil
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	WorkspaceID string // required
	Since       time.Time
	TokenID     string
	Route       string // a substring of the route
	Object      string
	Limit       int
}

// ListAudit returns matching entries, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	q := `SELECT time, workspace_id, token_id, method, route, object, status, error FROM audit WHERE workspace_id = ? AND time >= ?`
	args := []any{f.WorkspaceID, f.Since.UTC().Format(time.RFC3339Nano)}
	if f.TokenID != "" {
		q += ` AND token_id = ?`
		args = append(args, f.TokenID)
	}
	if f.Route != "" {
		q += ` AND instr(route, ?) > 0`
		args = append(args, f.Route)
	}
	if f.Object != "" {
		q += ` AND object = ?`
		args = append(args, f.Object)
	}
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 1000
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list audit: %w", err)
	}
	defer closeRows(rows)
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var tm string
		if err := rows.Scan(&tm, &e.WorkspaceID, &e.TokenID, &e.Method, &e.Route, &e.Object, &e.Status, &e.Error); err != nil {
			return nil, fmt.Errorf("store: list audit: %w", err)
		}
		if e.Time, err = parseTime("audit entry", tm); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit: %w", err)
	}
	return out, nil
}

// PruneAudit drops audit entries older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM audit WHERE time < ?`, before.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return 0, fmt.Errorf("store: prune audit: %w", err)
	}
	return res.RowsAffected()
}

// GrantImage lets workspace ws use an image (it built or resolved it).
func (s *Store) GrantImage(ctx context.Context, ws, imageID string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO image_owners(workspace_id, image_id) VALUES (?, ?)`, ws, imageID); err != nil {
		return fmt.Errorf("store: grant image %s: %w", imageID, err)
	}
	return nil
}

// CanUseImage reports whether workspace ws may use an image.
func (s *Store) CanUseImage(ctx context.Context, ws, imageID string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM image_owners WHERE workspace_id = ? AND image_id = ?`, ws, imageID).Scan(&n); err != nil {
		return false, fmt.Errorf("store: image %s: %w", imageID, err)
	}
	return n > 0, nil
}

// ReleaseImage takes an image away from workspace ws, and reports whether another workspace
// still uses it.
func (s *Store) ReleaseImage(ctx context.Context, ws, imageID string) (othersUse bool, err error) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM image_owners WHERE workspace_id = ? AND image_id = ?`, ws, imageID); err != nil {
		return false, fmt.Errorf("store: release image %s: %w", imageID, err)
	}
	// A snapshot this workspace made stops counting against its quota with the image.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM blob_owners WHERE workspace_id = ? AND sum = ?`, ws, SnapshotGrant(imageID)); err != nil {
		return false, fmt.Errorf("store: release image %s: %w", imageID, err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM image_owners WHERE image_id = ?`, imageID).Scan(&n); err != nil {
		return false, fmt.Errorf("store: release image %s: %w", imageID, err)
	}
	return n > 0, nil
}

// Usage is what a workspace's live containers hold.
type Usage struct {
	Sandboxes int
	CPU       float64
	MemoryMiB int
	GPUs      int
}

// WorkspaceUsage sums the live sandboxes and function containers of workspace ws.
func (s *Store) WorkspaceUsage(ctx context.Context, ws string) (Usage, error) {
	sbs, err := s.ListSandboxes(ctx, SandboxFilter{WorkspaceID: ws, Functions: true})
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	for _, sb := range sbs {
		u.Sandboxes++
		u.CPU += sb.CPU
		u.MemoryMiB += sb.MemoryMiB
		u.GPUs += sb.GPU.MaxCount()
	}
	return u, nil
}

// SnapshotGrant is the key under which a snapshot image's new layer is charged to the
// workspace that made it (blob_owners holds uploads by content sum and snapshots by this).
func SnapshotGrant(imageID string) string { return snapshotGrantPrefix + imageID }

const snapshotGrantPrefix = "snapshot:"

// SnapshotOfGrant is the snapshot image a blob_owners key charges for, if it is one.
func SnapshotOfGrant(sum string) (imageID string, ok bool) {
	return strings.CutPrefix(sum, snapshotGrantPrefix)
}

// GrantBlob records that workspace ws keeps a blob (an upload, or a snapshot's layer) of size
// bytes, unless that would take it over quota bytes (0: no limit).
func (s *Store) GrantBlob(ctx context.Context, ws, sum string, size, quota int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: grant blob: %w", err)
	}
	defer rollback(tx)
	var owned int64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_owners WHERE workspace_id = ? AND sum = ?`, ws, sum).Scan(&owned); err != nil {
		return fmt.Errorf("store: grant blob: %w", err)
	}
	if owned > 0 {
		return nil
	}
	if err := checkBlobRoom(ctx, tx, ws, size, quota); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO blob_owners(workspace_id, sum, size) VALUES (?, ?, ?)`, ws, sum, size); err != nil {
		return fmt.Errorf("store: grant blob: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: grant blob: %w", err)
	}
	return nil
}

// CheckBlobRoom says whether workspace ws may keep size more bytes of blobs under quota
// (0: no limit); with size 0, whether it is already at its quota.
func (s *Store) CheckBlobRoom(ctx context.Context, ws string, size, quota int64) error {
	return checkBlobRoom(ctx, s.db, ws, size, quota)
}

// rowQuerier is a *sql.DB or a *sql.Tx.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func checkBlobRoom(ctx context.Context, q rowQuerier, ws string, size, quota int64) error {
	if quota <= 0 {
		return nil
	}
	var used int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM blob_owners WHERE workspace_id = ?`, ws).Scan(&used); err != nil {
		return fmt.Errorf("store: blob quota: %w", err)
	}
	if used+size > quota || size == 0 && used >= quota {
		return errdefs.WithKind(errdefs.ErrQuota, fmt.Sprintf("quota image_disk_mib is %d for this workspace and %d MiB of uploads and snapshots are kept; this one adds %.1f MiB (delete images and prune, or ask the operator for more)",
			quota>>20, used>>20, float64(size)/(1<<20)))
	}
	return nil
}

// HasBlobGrant reports whether workspace ws uploaded a blob.
func (s *Store) HasBlobGrant(ctx context.Context, ws, sum string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_owners WHERE workspace_id = ? AND sum = ?`, ws, sum).Scan(&n); err != nil {
		return false, fmt.Errorf("store: blob %s: %w", sum, err)
	}
	return n > 0, nil
}

// ForgetBlobs drops the grants of blobs that exist no more (a prune removed them).
func (s *Store) ForgetBlobs(ctx context.Context, exists func(sum string) bool) error {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT sum FROM blob_owners`)
	if err != nil {
		return fmt.Errorf("store: forget blobs: %w", err)
	}
	sums, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("store: forget blobs: %w", err)
	}
	for _, sum := range sums {
		if exists(sum) {
			continue
		}
		if _, err := s.db.ExecContext(ctx, `DELETE FROM blob_owners WHERE sum = ?`, sum); err != nil {
			return fmt.Errorf("store: forget blob %s: %w", sum, err)
		}
	}
	return nil
}
