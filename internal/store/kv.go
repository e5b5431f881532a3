package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
)

// kvSchema holds Modal's Dicts and Queues (dicts.go, queues.go). Both are named (or ephemeral)
// objects of a workspace; their contents are opaque bytes that the clients pickled. bytes on
// each object is what its contents take, kept in step by every write, so that a workspace's
// quota (kv_store_mib) is checked without a scan. Times the sweeps compare are unix
// nanoseconds (INTEGER); created_at is text like every other record's.
const kvSchema = `
CREATE TABLE IF NOT EXISTS dicts (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL,
	name TEXT,
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	heartbeat INTEGER,
	bytes INTEGER NOT NULL DEFAULT 0,
	UNIQUE(workspace_id, name)
);
CREATE INDEX IF NOT EXISTS dicts_heartbeat ON dicts(heartbeat) WHERE heartbeat IS NOT NULL;
CREATE TABLE IF NOT EXISTS dict_entries (
	dict_id TEXT NOT NULL,
	key BLOB NOT NULL,
	value BLOB NOT NULL,
	touched INTEGER NOT NULL,
	PRIMARY KEY (dict_id, key)
);
CREATE INDEX IF NOT EXISTS dict_entries_touched ON dict_entries(touched);
CREATE TABLE IF NOT EXISTS queues (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL,
	name TEXT,
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	heartbeat INTEGER,
	bytes INTEGER NOT NULL DEFAULT 0,
	UNIQUE(workspace_id, name)
);
CREATE INDEX IF NOT EXISTS queues_heartbeat ON queues(heartbeat) WHERE heartbeat IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_partitions (
	queue_id TEXT NOT NULL,
	partition TEXT NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	bytes INTEGER NOT NULL DEFAULT 0,
	expires INTEGER NOT NULL,
	PRIMARY KEY (queue_id, partition)
);
CREATE INDEX IF NOT EXISTS queue_partitions_expires ON queue_partitions(expires);
CREATE TABLE IF NOT EXISTS queue_items (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	queue_id TEXT NOT NULL,
	partition TEXT NOT NULL,
	value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_items_partition ON queue_items(queue_id, partition, seq);
`

// migrateKV adds the tables of Dicts and Queues to a database made before them.
func (s *Store) migrateKV(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, kvSchema); err != nil {
		return fmt.Errorf("store: create the tables of dicts and queues: %w", err)
	}
	return nil
}

// EphemeralTTL is how long an ephemeral Dict or Queue lives after its client's last heartbeat
// (Modal's clients beat every 300 s while the `with` block runs).
const EphemeralTTL = 15 * time.Minute

// KVObject is a Dict or a Queue: its name (none when ephemeral) and who made it.
type KVObject struct {
	ID          string    `json:"-"`
	WorkspaceID string    `json:"-"`
	Name        string    `json:"name,omitempty"`
	Ephemeral   bool      `json:"ephemeral,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by,omitempty"`
}

// kvKind names one of the two tables of objects.
type kvKind struct {
	table  string // dicts | queues
	what   string // Dict | Queue: for messages, as Modal writes them
	prefix ids.Kind
}

var (
	dictKind  = kvKind{"dicts", "Dict", ids.Dict}
	queueKind = kvKind{"queues", "Queue", ids.Queue}
)

// objectNameRE is Modal's rule for object names (modal._utils.name_utils.is_valid_object_name).
var (
	objectNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)
	appIDRE      = regexp.MustCompile(`^ap-[a-zA-Z0-9]{22}$`)
)

// CheckObjectName refuses what Modal refuses as the name of a Dict, Queue or Volume.
func CheckObjectName(name, what string) error {
	if !objectNameRE.MatchString(name) || appIDRE.MatchString(name) {
		return errdefs.Invalid("Invalid %s name: '%s'. Names may contain only alphanumeric characters, dashes, periods, and underscores, must be shorter than 64 characters, and cannot conflict with App ID strings.", what, name)
	}
	return nil
}

func (k kvKind) notFound(ref string) error {
	return errdefs.NotFound("%s %q not found; create it with %s.from_name(%q, create_if_missing=True) or `gust %s create %s`",
		k.what, ref, k.what, ref, strings.ToLower(k.what), ref)
}

// create makes a named object (name != "") or an ephemeral one. A name that exists is a
// conflict unless allowExisting, which returns the existing object.
func (s *Store) kvCreate(ctx context.Context, k kvKind, ws, name, createdBy string, allowExisting bool) (KVObject, error) {
	o := KVObject{ID: ids.New(k.prefix), WorkspaceID: ws, Name: name, CreatedAt: time.Now().UTC(), CreatedBy: createdBy}
	var nameArg, beat any
	if name == "" {
		o.Ephemeral = true
		beat = o.CreatedAt.UnixNano()
	} else {
		if err := CheckObjectName(name, k.what); err != nil {
			return KVObject{}, err
		}
		nameArg = name
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO `+k.table+`(id, workspace_id, name, created_at, created_by, heartbeat) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT(workspace_id, name) DO NOTHING`, o.ID, ws, nameArg, o.CreatedAt.Format(time.RFC3339Nano), createdBy, beat)
	if err != nil {
		return KVObject{}, fmt.Errorf("store: create %s %q: %w", k.what, name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return KVObject{}, fmt.Errorf("store: create %s %q: %w", k.what, name, err)
	} else if n == 0 {
		if !allowExisting {
			return KVObject{}, errdefs.Conflict("%s '%s' already exists", k.what, name)
		}
		return s.kvLookup(ctx, k, ws, name)
	}
	return o, nil
}

const kvColumns = `id, workspace_id, COALESCE(name, ''), created_at, created_by, heartbeat IS NOT NULL`

func scanKV(k kvKind, row interface{ Scan(...any) error }) (KVObject, error) {
	var o KVObject
	var created string
	if err := row.Scan(&o.ID, &o.WorkspaceID, &o.Name, &created, &o.CreatedBy, &o.Ephemeral); err != nil {
		return o, err
	}
	var err error
	o.CreatedAt, err = parseTime(k.what+" "+o.ID, created)
	return o, err
}

// kvLookup finds a named object of workspace ws.
func (s *Store) kvLookup(ctx context.Context, k kvKind, ws, name string) (KVObject, error) {
	o, err := scanKV(k, s.db.QueryRowContext(ctx, `SELECT `+kvColumns+` FROM `+k.table+` WHERE workspace_id = ? AND name = ?`, ws, name))
	if errors.Is(err, sql.ErrNoRows) {
		return o, k.notFound(name)
	}
	if err != nil {
		return o, fmt.Errorf("store: look up %s %q: %w", k.what, name, err)
	}
	return o, nil
}

// kvGet returns an object of workspace ws by ID; another workspace's is not found.
func (s *Store) kvGet(ctx context.Context, k kvKind, ws, id string) (KVObject, error) {
	o, err := scanKV(k, s.db.QueryRowContext(ctx, `SELECT `+kvColumns+` FROM `+k.table+` WHERE id = ? AND workspace_id = ?`, id, ws))
	if errors.Is(err, sql.ErrNoRows) {
		return o, errdefs.NotFound("%s %q not found", k.what, id)
	}
	if err != nil {
		return o, fmt.Errorf("store: get %s %q: %w", k.what, id, err)
	}
	return o, nil
}

// kvList returns the named objects of workspace ws, newest first: at most limit (0: all),
// created before before (zero: any time).
func (s *Store) kvList(ctx context.Context, k kvKind, ws string, limit int, before time.Time) ([]KVObject, error) {
	q := `SELECT ` + kvColumns + ` FROM ` + k.table + ` WHERE workspace_id = ? AND name IS NOT NULL`
	args := []any{ws}
	if !before.IsZero() {
		q += ` AND created_at < ?`
		args = append(args, before.UTC().Format(time.RFC3339Nano))
	}
	q += ` ORDER BY created_at DESC`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", k.table, err)
	}
	defer closeRows(rows)
	out := []KVObject{}
	for rows.Next() {
		o, err := scanKV(k, rows)
		if err != nil {
			return nil, fmt.Errorf("store: list %s: %w", k.table, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list %s: %w", k.table, err)
	}
	return out, nil
}

// kvHeartbeat keeps an ephemeral object alive; a no-op for a named one.
func (s *Store) kvHeartbeat(ctx context.Context, k kvKind, ws, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE `+k.table+` SET heartbeat = CASE WHEN heartbeat IS NULL THEN NULL ELSE ? END WHERE id = ? AND workspace_id = ?`,
		time.Now().UnixNano(), id, ws)
	if err != nil {
		return fmt.Errorf("store: heartbeat %s %s: %w", k.what, id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("%s %q not found", k.what, id)
	}
	return nil
}

// checkKVQuota refuses a write that adds grow bytes when the workspace would then hold more
// than quota bytes of Dict and Queue contents (0: no limit). Called inside the write's
// transaction.
func checkKVQuota(ctx context.Context, tx *sql.Tx, ws string, grow, quota int64) error {
	if quota <= 0 || grow <= 0 {
		return nil
	}
	var used int64
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT COALESCE(SUM(bytes), 0) FROM dicts WHERE workspace_id = ?) + (SELECT COALESCE(SUM(bytes), 0) FROM queues WHERE workspace_id = ?)`,
		ws, ws).Scan(&used); err != nil {
		return fmt.Errorf("store: workspace usage: %w", err)
	}
	if used+grow > quota {
		return errdefs.WithKind(errdefs.ErrQuota, fmt.Sprintf("quota kv_store_mib is %d for this workspace and its Dicts and Queues hold %.1f MiB; this write adds %.1f MiB (clear or delete some, or ask the operator for more)",
			quota>>20, float64(used)/(1<<20), float64(grow)/(1<<20)))
	}
	return nil
}

// KVUsage is the bytes of Dict and Queue contents workspace ws holds.
func (s *Store) KVUsage(ctx context.Context, ws string) (int64, error) {
	var used int64
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT COALESCE(SUM(bytes), 0) FROM dicts WHERE workspace_id = ?) + (SELECT COALESCE(SUM(bytes), 0) FROM queues WHERE workspace_id = ?)`,
		ws, ws).Scan(&used); err != nil {
		return 0, fmt.Errorf("store: workspace usage: %w", err)
	}
	return used, nil
}

// ExpireKV deletes what has expired at now: Dict entries untouched for DictEntryTTL, Queue
// partitions past their TTL, and ephemeral objects whose client stopped beating. It returns
// how many rows went.
func (s *Store) ExpireKV(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	// Entries first, in batches, so that a large expiry never holds the one connection long.
	for {
		n, dicts, err := s.expireDictEntries(ctx, now, 100)
		total += n
		if err != nil {
			return total, err
		}
		if dicts < 100 {
			break
		}
	}
	n, err := s.expireQueuePartitions(ctx, now)
	total += n
	if err != nil {
		return total, err
	}
	for _, k := range []kvKind{dictKind, queueKind} {
		rows, err := s.db.QueryContext(ctx, `SELECT id, workspace_id FROM `+k.table+` WHERE heartbeat IS NOT NULL AND heartbeat < ?`, now.Add(-EphemeralTTL).UnixNano())
		if err != nil {
			return total, fmt.Errorf("store: expire ephemeral %s: %w", k.table, err)
		}
		var stale [][2]string
		for rows.Next() {
			var id, ws string
			if err := rows.Scan(&id, &ws); err != nil {
				closeRows(rows)
				return total, fmt.Errorf("store: expire ephemeral %s: %w", k.table, err)
			}
			stale = append(stale, [2]string{id, ws})
		}
		err = rows.Err()
		closeRows(rows)
		if err != nil {
			return total, fmt.Errorf("store: expire ephemeral %s: %w", k.table, err)
		}
		for _, o := range stale {
			var err error
			if k == dictKind {
				err = s.DeleteDict(ctx, o[1], o[0])
			} else {
				err = s.DeleteQueue(ctx, o[1], o[0])
			}
			if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return total, err
			}
			total++
		}
	}
	return total, nil
}
