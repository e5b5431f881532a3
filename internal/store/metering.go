package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/metering"
)

// The usage ledger: one row per (container, seq) interval a worker measured, with whom it
// belongs to (metering.Record). The primary key makes recording idempotent: an interval sent
// twice (a retry, a restarted worker's spool) is recorded once. Times are Unix nanoseconds, so
// that range queries compare integers.
const meteringSchema = `
CREATE TABLE IF NOT EXISTS usage_intervals (
	container_id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	workspace_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	function_id TEXT NOT NULL DEFAULT '',
	start_ns INTEGER NOT NULL,
	end_ns INTEGER NOT NULL,
	final INTEGER NOT NULL DEFAULT 0,
	doc TEXT NOT NULL,
	PRIMARY KEY (container_id, seq)
);
CREATE INDEX IF NOT EXISTS usage_ws_end ON usage_intervals(workspace_id, end_ns);
CREATE INDEX IF NOT EXISTS usage_app ON usage_intervals(app_id, end_ns);
CREATE TABLE IF NOT EXISTS app_tags (
	app_id TEXT PRIMARY KEY,
	tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_names (
	worker_id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	registered_at TEXT NOT NULL
);
`

// RecordUsage records intervals, each once: those recorded already are skipped. It returns
// the ones that were new.
func (s *Store) RecordUsage(ctx context.Context, recs []metering.Record) ([]metering.Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: record usage: %w", err)
	}
	defer rollback(tx)
	// An interval after a container's final one is not recorded: the container ended there
	// (its worker's last interval, or the one the server closed it with when it lost the
	// worker, CloseUsage), so what a worker that comes back sends of later times is not billed.
	st, err := tx.PrepareContext(ctx, `INSERT INTO usage_intervals(container_id, seq, workspace_id, app_id, function_id, start_ns, end_ns, final, doc)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM usage_intervals WHERE container_id = ? AND seq < ? AND final = 1)
		ON CONFLICT(container_id, seq) DO NOTHING`)
	if err != nil {
		return nil, fmt.Errorf("store: record usage: %w", err)
	}
	defer closeStmt(st)
	var fresh []metering.Record
	for _, r := range recs {
		doc, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("store: encode usage %s/%d: %w", r.ContainerID, r.Seq, err)
		}
		res, err := st.ExecContext(ctx, r.ContainerID, r.Seq, r.WorkspaceID, r.AppID, r.FunctionID,
			r.Start.UnixNano(), r.End.UnixNano(), r.Final, string(doc), r.ContainerID, r.Seq)
		if err != nil {
			return nil, fmt.Errorf("store: record usage %s/%d: %w", r.ContainerID, r.Seq, err)
		}
		if k, err := res.RowsAffected(); err == nil && k > 0 {
			fresh = append(fresh, r)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: record usage: %w", err)
	}
	return fresh, nil
}

// CloseUsage ends the usage of a container whose worker was lost, at its last recorded
// interval: what the worker reported is what is billed. It records a final interval of no
// time (and no cost) after the last one, attributed as that one (or as rec, for a container
// with none), so that the container's figure is final (metering.Live's closed). A worker that
// comes back later and sends its spool changes nothing: an interval recorded already is
// skipped as always, and one after the final one is not recorded (RecordUsage). It reports
// whether it closed anything (false: the container had ended already).
func (s *Store) CloseUsage(ctx context.Context, rec metering.Record, why string) (bool, error) {
	// A worker's interval may take the next seq between the read and the insert: then read
	// again. More than a few races in a row means something else is wrong.
	for range 5 {
		closed, raced, err := s.closeUsage(ctx, rec, why)
		if err != nil || !raced {
			return closed, err
		}
	}
	return false, errdefs.Unavailable("closing the usage of container %s: its intervals kept changing", rec.ContainerID)
}

func (s *Store) closeUsage(ctx context.Context, rec metering.Record, why string) (closed, raced bool, err error) {
	var final int
	var last sql.NullString
	err = s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(final), 0), (SELECT doc FROM usage_intervals WHERE container_id = ? ORDER BY seq DESC LIMIT 1)
		FROM usage_intervals WHERE container_id = ?`, rec.ContainerID, rec.ContainerID).Scan(&final, &last)
	if err != nil {
		return false, false, fmt.Errorf("store: close usage of %s: %w", rec.ContainerID, err)
	}
	if final > 0 {
		return false, false, nil
	}
	end := rec.Interval
	if last.Valid {
		var prev metering.Record
		if err := json.Unmarshal([]byte(last.String), &prev); err != nil {
			return false, false, fmt.Errorf("store: close usage of %s: corrupt record: %w", rec.ContainerID, err)
		}
		rec, end = prev, prev.Interval
		end.Seq, end.Start = prev.Seq+1, prev.End
	}
	rec.Interval = metering.Interval{ContainerID: rec.ContainerID, Seq: end.Seq, Start: end.Start, End: end.Start,
		CPURequest: end.CPURequest, MemoryGiB: end.MemoryGiB, GPUType: end.GPUType, GPUCount: end.GPUCount, Final: true}
	rec.EndedBy = why
	fresh, err := s.RecordUsage(ctx, []metering.Record{rec})
	if err != nil {
		return false, false, err
	}
	return len(fresh) == 1, len(fresh) == 0, nil
}

// UsageFilter selects recorded intervals: those of a workspace ("" every workspace's, the
// operator's metrics only) overlapping [From, To) (a zero To is open), optionally of one app
// or one container.
type UsageFilter struct {
	WorkspaceID string
	From, To    time.Time
	AppID       string
	ContainerID string
}

// ListUsage returns the recorded intervals a filter selects, oldest first.
func (s *Store) ListUsage(ctx context.Context, f UsageFilter) ([]metering.Record, error) {
	q := `SELECT doc FROM usage_intervals WHERE (? = '' OR workspace_id = ?) AND end_ns >= ?`
	args := []any{f.WorkspaceID, f.WorkspaceID, f.From.UnixNano()}
	if !f.To.IsZero() {
		q += ` AND start_ns < ?`
		args = append(args, f.To.UnixNano())
	}
	if f.AppID != "" {
		q += ` AND app_id = ?`
		args = append(args, f.AppID)
	}
	if f.ContainerID != "" {
		q += ` AND container_id = ?`
		args = append(args, f.ContainerID)
	}
	q += ` ORDER BY start_ns, container_id, seq`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list usage: %w", err)
	}
	defer closeRows(rows)
	out := []metering.Record{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("store: list usage: %w", err)
		}
		var r metering.Record
		if err := json.Unmarshal([]byte(doc), &r); err != nil {
			return nil, fmt.Errorf("store: list usage: corrupt record: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list usage: %w", err)
	}
	return out, nil
}

// SetAppTags replaces an app's tags.
func (s *Store) SetAppTags(ctx context.Context, appID string, tags map[string]string) error {
	if tags == nil {
		tags = map[string]string{}
	}
	doc, err := json.Marshal(tags)
	if err != nil {
		return fmt.Errorf("store: encode tags of app %s: %w", appID, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO app_tags(app_id, tags) VALUES (?, ?) ON CONFLICT(app_id) DO UPDATE SET tags = excluded.tags`,
		appID, string(doc)); err != nil {
		return fmt.Errorf("store: set tags of app %s: %w", appID, err)
	}
	return nil
}

// AppTags returns an app's tags (none: an empty map).
func (s *Store) AppTags(ctx context.Context, appID string) (map[string]string, error) {
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT tags FROM app_tags WHERE app_id = ?`, appID).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: tags of app %s: %w", appID, err)
	}
	tags := map[string]string{}
	if err := json.Unmarshal([]byte(doc), &tags); err != nil {
		return nil, fmt.Errorf("store: corrupt tags of app %s: %w", appID, err)
	}
	return tags, nil
}

// PutWorkerName remembers which worker name an ID was given to, so that a worker that
// restarted under a new ID may still report the usage its old ID owed.
func (s *Store) PutWorkerName(ctx context.Context, id, name string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO worker_names(worker_id, name, registered_at) VALUES (?, ?, ?) ON CONFLICT(worker_id) DO NOTHING`,
		id, name, at.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("store: remember worker %s: %w", id, err)
	}
	return nil
}

// WorkerName returns the name a worker ID was given to, "" if unknown.
func (s *Store) WorkerName(ctx context.Context, id string) (string, error) {
	var name string
	err := s.db.QueryRowContext(ctx, `SELECT name FROM worker_names WHERE worker_id = ?`, id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: worker %s: %w", id, err)
	}
	return name, nil
}

const budgetsSchema = `
CREATE TABLE IF NOT EXISTS budgets (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS budgets_ws ON budgets(workspace_id);
`

// PutBudget records a budget (a new one, or a change to one of the same ID).
func (s *Store) PutBudget(ctx context.Context, b metering.Budget) error {
	doc, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("store: encode budget %s: %w", b.ID, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO budgets(id, workspace_id, doc) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc`,
		b.ID, b.WorkspaceID, string(doc)); err != nil {
		return fmt.Errorf("store: put budget %s: %w", b.ID, err)
	}
	return nil
}

// ListBudgets returns the budgets of workspace ws ("" every workspace's), oldest first.
func (s *Store) ListBudgets(ctx context.Context, ws string) ([]metering.Budget, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT doc FROM budgets WHERE ? = '' OR workspace_id = ? ORDER BY rowid`, ws, ws)
	if err != nil {
		return nil, fmt.Errorf("store: list budgets: %w", err)
	}
	defer closeRows(rows)
	out := []metering.Budget{}
	for rows.Next() {
		var doc string
		var b metering.Budget
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("store: list budgets: %w", err)
		}
		if err := json.Unmarshal([]byte(doc), &b); err != nil {
			return nil, fmt.Errorf("store: list budgets: corrupt record: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list budgets: %w", err)
	}
	return out, nil
}

// DeleteBudget removes a budget of workspace ws.
func (s *Store) DeleteBudget(ctx context.Context, ws, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM budgets WHERE id = ? AND workspace_id = ?`, id, ws)
	if err != nil {
		return fmt.Errorf("store: delete budget %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: delete budget %s: %w", id, err)
	} else if n == 0 {
		return errdefs.NotFound("budget %q not found", id)
	}
	return nil
}

// StoredBytes returns what each workspace keeps stored, by storage class and workspace: its
// image uploads (metering.StorageImage) and its Dicts' and Queues' contents
// (metering.StorageDictQueu). Workspaces that keep nothing are left out.
func (s *Store) StoredBytes(ctx context.Context) (map[string]map[string]int64, error) {
	out := map[string]map[string]int64{metering.StorageImage: {}, metering.StorageDictQueu: {}}
	for class, q := range map[string]string{
		metering.StorageImage:    `SELECT workspace_id, SUM(size) FROM blob_owners GROUP BY workspace_id`,
		metering.StorageDictQueu: `SELECT workspace_id, SUM(n) FROM (SELECT workspace_id, bytes AS n FROM dicts UNION ALL SELECT workspace_id, bytes FROM queues) GROUP BY workspace_id`,
	} {
		rows, err := s.db.QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("store: stored bytes: %w", err)
		}
		for rows.Next() {
			var ws string
			var n int64
			if err := rows.Scan(&ws, &n); err != nil {
				closeRows(rows)
				return nil, fmt.Errorf("store: stored bytes: %w", err)
			}
			if n > 0 {
				out[class][ws] = n
			}
		}
		err = rows.Err()
		closeRows(rows)
		if err != nil {
			return nil, fmt.Errorf("store: stored bytes: %w", err)
		}
	}
	return out, nil
}
