package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
)

// Volumes are named (or ephemeral) objects of a workspace, as Dicts are; what they hold lives
// in the volume blob store (internal/volume), and the store keeps each volume's current
// version (head: the SHA-256 of its manifest, "" when empty) with the bytes its files hold,
// which count against the workspace's volume_mib quota.
const volumesSchema = `
CREATE TABLE IF NOT EXISTS volumes (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL,
	name TEXT,
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	heartbeat INTEGER,
	head TEXT NOT NULL DEFAULT '',
	bytes INTEGER NOT NULL DEFAULT 0,
	commits INTEGER NOT NULL DEFAULT 0,
	UNIQUE(workspace_id, name)
);
CREATE INDEX IF NOT EXISTS volumes_heartbeat ON volumes(heartbeat) WHERE heartbeat IS NOT NULL;
CREATE TABLE IF NOT EXISTS volume_blob_grants (
	workspace_id TEXT NOT NULL,
	blob TEXT NOT NULL,
	PRIMARY KEY (workspace_id, blob)
);
`

// Volume files are stored once by content for the whole machine, but a workspace may name
// in a commit only the files it uploaded itself (or that its containers wrote): knowing a
// file's SHA-256 must not be a way to read, or to learn of, another workspace's file.

// GrantVolumeBlobs records that workspace ws holds the content of blobs (it uploaded them, or
// a container of its wrote them), in one transaction: a worker's commit may name thousands.
func (s *Store) GrantVolumeBlobs(ctx context.Context, ws string, blobs ...string) (retErr error) {
	if len(blobs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: granting volume blobs: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = tx.Rollback() // the error that matters is retErr
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO volume_blob_grants (workspace_id, blob) VALUES (?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return fmt.Errorf("store: granting volume blobs: %w", err)
	}
	defer stmt.Close()
	for _, b := range blobs {
		if _, err := stmt.ExecContext(ctx, ws, b); err != nil {
			return fmt.Errorf("store: granting volume blob %s: %w", b, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: granting volume blobs: %w", err)
	}
	return nil
}

// VolumeBlobGranted reports whether workspace ws may name blob in a commit.
func (s *Store) VolumeBlobGranted(ctx context.Context, ws, blob string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM volume_blob_grants WHERE workspace_id = ? AND blob = ?`, ws, blob).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: volume blob %s: %w", blob, err)
	}
	return true, nil
}

var volumeKind = kvKind{"volumes", "Volume", ids.Volume}

// Volume is a volume's record: its object fields, and its current version.
type Volume struct {
	KVObject
	Head    string `json:"version_id"` // the manifest's SHA-256; "" is empty
	Bytes   int64  `json:"bytes"`
	Commits int64  `json:"commits"`
}

func (s *Store) migrateVolumes(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, volumesSchema); err != nil {
		return fmt.Errorf("store: create the table of volumes: %w", err)
	}
	return nil
}

// withHead reads o's version.
func (s *Store) withHead(ctx context.Context, o KVObject) (Volume, error) {
	v := Volume{KVObject: o}
	err := s.db.QueryRowContext(ctx, `SELECT head, bytes, commits FROM volumes WHERE id = ?`, o.ID).Scan(&v.Head, &v.Bytes, &v.Commits)
	if errors.Is(err, sql.ErrNoRows) {
		return v, volumeKind.notFound(o.ID)
	}
	if err != nil {
		return v, fmt.Errorf("store: volume %s: %w", o.ID, err)
	}
	return v, nil
}

// CreateVolume makes a named volume of workspace ws, or an ephemeral one when name is "".
func (s *Store) CreateVolume(ctx context.Context, ws, name, createdBy string, allowExisting bool) (Volume, error) {
	o, err := s.kvCreate(ctx, volumeKind, ws, name, createdBy, allowExisting)
	if err != nil {
		return Volume{}, err
	}
	return s.withHead(ctx, o)
}

// LookupVolume finds a named volume of workspace ws, creating it when create is set.
func (s *Store) LookupVolume(ctx context.Context, ws, name, createdBy string, create bool) (Volume, error) {
	if err := CheckObjectName(name, volumeKind.what); err != nil {
		return Volume{}, err
	}
	var o KVObject
	var err error
	if create {
		o, err = s.kvCreate(ctx, volumeKind, ws, name, createdBy, true)
	} else {
		o, err = s.kvLookup(ctx, volumeKind, ws, name)
	}
	if err != nil {
		return Volume{}, err
	}
	return s.withHead(ctx, o)
}

// GetVolume returns a volume of workspace ws by ID; another workspace's is not found.
func (s *Store) GetVolume(ctx context.Context, ws, id string) (Volume, error) {
	o, err := s.kvGet(ctx, volumeKind, ws, id)
	if err != nil {
		return Volume{}, err
	}
	return s.withHead(ctx, o)
}

// ListVolumes returns the named volumes of workspace ws, newest first.
func (s *Store) ListVolumes(ctx context.Context, ws string, limit int, before time.Time) ([]Volume, error) {
	os, err := s.kvList(ctx, volumeKind, ws, limit, before)
	if err != nil {
		return nil, err
	}
	out := make([]Volume, 0, len(os))
	for _, o := range os {
		v, err := s.withHead(ctx, o)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// HeartbeatVolume keeps an ephemeral volume alive.
func (s *Store) HeartbeatVolume(ctx context.Context, ws, id string) error {
	return s.kvHeartbeat(ctx, volumeKind, ws, id)
}

// DeleteVolume removes a volume of workspace ws. Its blobs stay in the blob store (other
// volumes may share them).
func (s *Store) DeleteVolume(ctx context.Context, ws, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM volumes WHERE id = ? AND workspace_id = ?`, id, ws)
	if err != nil {
		return fmt.Errorf("store: delete volume %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("Volume %q not found", id)
	}
	return nil
}

// RenameVolume gives a named volume of workspace ws a new name, which must be free.
func (s *Store) RenameVolume(ctx context.Context, ws, id, name string) error {
	if err := CheckObjectName(name, volumeKind.what); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE volumes SET name = ? WHERE id = ? AND workspace_id = ? AND name IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM volumes WHERE workspace_id = ? AND name = ?)`, name, id, ws, ws, name)
	if err != nil {
		return fmt.Errorf("store: rename volume %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.GetVolume(ctx, ws, id); err != nil {
			return err
		}
		return errdefs.Conflict("Volume '%s' already exists (or the volume is ephemeral, which has no name)", name)
	}
	return nil
}

// ErrStaleHead is SetVolumeHead's answer when another commit moved the head first: read the
// new head, apply the changes again, and retry.
var ErrStaleHead = errors.New("store: the volume's version moved")

// SetVolumeHead moves volume id of workspace ws from version old to version head holding
// bytes, unless that would take the workspace's volumes past quota bytes (0: no limit) while
// growing. A head that moved meanwhile is ErrStaleHead.
func (s *Store) SetVolumeHead(ctx context.Context, ws, id, old, head string, bytes, quota int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: commit to volume %s: %w", id, err)
	}
	defer rollback(tx)
	var cur string
	var curBytes int64
	err = tx.QueryRowContext(ctx, `SELECT head, bytes FROM volumes WHERE id = ? AND workspace_id = ?`, id, ws).Scan(&cur, &curBytes)
	if errors.Is(err, sql.ErrNoRows) {
		return errdefs.NotFound("Volume %q not found (deleted?)", id)
	}
	if err != nil {
		return fmt.Errorf("store: commit to volume %s: %w", id, err)
	}
	if cur != old {
		return ErrStaleHead
	}
	if quota > 0 && bytes > curBytes {
		var others int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes), 0) FROM volumes WHERE workspace_id = ? AND id != ?`, ws, id).Scan(&others); err != nil {
			return fmt.Errorf("store: workspace volume usage: %w", err)
		}
		if others+bytes > quota {
			return errdefs.WithKind(errdefs.ErrQuota, fmt.Sprintf("quota volume_mib is %d for this workspace and its volumes would hold %.1f MiB after this commit (%.1f MiB now); remove files or volumes, or ask the operator for more",
				quota>>20, float64(others+bytes)/(1<<20), float64(others+curBytes)/(1<<20)))
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE volumes SET head = ?, bytes = ?, commits = commits + 1 WHERE id = ?`, head, bytes, id); err != nil {
		return fmt.Errorf("store: commit to volume %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit to volume %s: %w", id, err)
	}
	return nil
}

// VolumeUsage is the bytes the current versions of workspace ws's volumes hold.
func (s *Store) VolumeUsage(ctx context.Context, ws string) (int64, error) {
	var used int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes), 0) FROM volumes WHERE workspace_id = ?`, ws).Scan(&used); err != nil {
		return 0, fmt.Errorf("store: workspace volume usage: %w", err)
	}
	return used, nil
}

// VolumeSizes lists every volume with the bytes it holds, for storage metering.
func (s *Store) VolumeSizes(ctx context.Context) ([]Volume, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+kvColumns+`, head, bytes, commits FROM volumes`)
	if err != nil {
		return nil, fmt.Errorf("store: list volumes: %w", err)
	}
	defer closeRows(rows)
	var out []Volume
	for rows.Next() {
		var v Volume
		var created string
		if err := rows.Scan(&v.ID, &v.WorkspaceID, &v.Name, &created, &v.CreatedBy, &v.Ephemeral, &v.Head, &v.Bytes, &v.Commits); err != nil {
			return nil, fmt.Errorf("store: list volumes: %w", err)
		}
		if v.CreatedAt, err = parseTime("Volume "+v.ID, created); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list volumes: %w", err)
	}
	return out, nil
}

// ExpireVolumes deletes ephemeral volumes whose client stopped beating, and returns how many.
func (s *Store) ExpireVolumes(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM volumes WHERE heartbeat IS NOT NULL AND heartbeat < ?`, now.Add(-EphemeralTTL).UnixNano())
	if err != nil {
		return 0, fmt.Errorf("store: expire ephemeral volumes: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
