package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
)

// Secret is a named set of environment variables. Its values are stored sealed (see
// secretkey.go) and opened only to start the containers of the functions that name it.
type Secret struct {
	ID        string            `json:"secret_id"`
	Name      string            `json:"name"`
	Keys      []string          `json:"keys"`
	Env       map[string]string `json:"-"`
	CreatedAt time.Time         `json:"created_at"`
}

// secretAD is the additional data a secret's values are sealed with: they open only as that
// secret's.
func secretAD(id, name string) string { return "gust secret\x00" + id + "\x00" + name }

// holdKey keeps the secret key from changing (RotateSecretKey) while a method seals or opens
// values: defer s.holdKey()().
func (s *Store) holdKey() func() {
	s.keyMu.RLock()
	return s.keyMu.RUnlock
}

// PutSecret creates (or, with overwrite, replaces) a secret of workspace ws. A replaced
// secret keeps its ID.
func (s *Store) PutSecret(ctx context.Context, ws, name string, env map[string]string, overwrite bool) (Secret, error) {
	defer s.holdKey()()
	b, err := json.Marshal(env)
	if err != nil {
		return Secret{}, fmt.Errorf("store: encode secret %q: %w", name, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Secret{}, fmt.Errorf("store: put secret %q: %w", name, err)
	}
	defer rollback(tx)
	sec := Secret{Name: name, CreatedAt: time.Now().UTC()}
	err = tx.QueryRowContext(ctx, `SELECT id FROM secrets WHERE workspace_id = ? AND name = ?`, ws, name).Scan(&sec.ID)
	switch {
	case err == nil && !overwrite:
		return Secret{}, errdefs.Conflict("secret %q already exists; pass --force (overwrite=True) to replace it", name)
	case errors.Is(err, sql.ErrNoRows):
		sec.ID = ids.New(ids.Secret)
	case err != nil:
		return Secret{}, fmt.Errorf("store: put secret %q: %w", name, err)
	}
	sealed := s.seal.seal(b, secretAD(sec.ID, name))
	if _, err := tx.ExecContext(ctx, `INSERT INTO secrets(id, workspace_id, name, env, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(workspace_id, name) DO UPDATE SET env = excluded.env, created_at = excluded.created_at`,
		sec.ID, ws, name, sealed, sec.CreatedAt.Format(time.RFC3339Nano)); err != nil {
		return Secret{}, fmt.Errorf("store: put secret %q: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return Secret{}, fmt.Errorf("store: put secret %q: %w", name, err)
	}
	sec.Env = env
	sec.Keys = sortedKeys(env)
	return sec, nil
}

// GetSecret returns a secret of workspace ws by name, values included (for containers only).
func (s *Store) GetSecret(ctx context.Context, ws, name string) (Secret, error) {
	defer s.holdKey()()
	var r secretRow
	err := s.db.QueryRowContext(ctx, `SELECT id, name, env, created_at FROM secrets WHERE workspace_id = ? AND name = ?`, ws, name).Scan(&r.id, &r.name, &r.env, &r.created)
	if errors.Is(err, sql.ErrNoRows) {
		return Secret{Name: name}, errdefs.NotFound("secret %q not found; create it with `gust secret create %s KEY=VALUE`", name, name)
	}
	if err != nil {
		return Secret{Name: name}, fmt.Errorf("store: get secret %q: %w", name, err)
	}
	return s.decodeSecret(r)
}

// ListSecrets returns the secrets of workspace ws (values too; the API shows only names and
// keys).
func (s *Store) ListSecrets(ctx context.Context, ws string) ([]Secret, error) {
	defer s.holdKey()()
	rows, err := loadSecretRows(ctx, s.db, ws)
	if err != nil {
		return nil, err
	}
	out := []Secret{}
	for _, r := range rows {
		sec, err := s.decodeSecret(r)
		if err != nil {
			return nil, err
		}
		out = append(out, sec)
	}
	return out, nil
}

// DeleteSecret removes a secret of workspace ws.
func (s *Store) DeleteSecret(ctx context.Context, ws, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE workspace_id = ? AND name = ?`, ws, name)
	if err != nil {
		return fmt.Errorf("store: delete secret %q: %w", name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: delete secret %q: %w", name, err)
	} else if n == 0 {
		return errdefs.NotFound("secret %q not found", name)
	}
	return nil
}

// secretRow is a row of the secrets table.
type secretRow struct{ id, name, env, created string }

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// loadSecretRows reads the rows of workspace ws's secrets by name; every workspace's when ws
// is "".
func loadSecretRows(ctx context.Context, db querier, ws string) ([]secretRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, name, env, created_at FROM secrets WHERE ? = '' OR workspace_id = ? ORDER BY name`, ws, ws)
	if err != nil {
		return nil, fmt.Errorf("store: list secrets: %w", err)
	}
	defer closeRows(rows)
	var out []secretRow
	for rows.Next() {
		var r secretRow
		if err := rows.Scan(&r.id, &r.name, &r.env, &r.created); err != nil {
			return nil, fmt.Errorf("store: list secrets: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list secrets: %w", err)
	}
	return out, nil
}

// decodeSecret opens a row: a sealed one, or one an older gust stored in the clear (until the
// migration at open seals it). Its errors name the secret, never its values.
func (s *Store) decodeSecret(r secretRow) (Secret, error) {
	sec := Secret{ID: r.id, Name: r.name}
	var err error
	if sec.CreatedAt, err = parseTime("secret "+r.name, r.created); err != nil {
		return sec, err
	}
	plain, _, err := openValue(s.seal, r.env, secretAD(r.id, r.name))
	if err != nil {
		return sec, fmt.Errorf("store: secret %q cannot be read: %w; restore the secret key it was written with, or create the secret again with --force", r.name, err)
	}
	if err := json.Unmarshal(plain, &sec.Env); err != nil {
		return sec, fmt.Errorf("store: secret %q is corrupt: its values are not a JSON object; create it again with --force", r.name)
	}
	sec.Keys = sortedKeys(sec.Env)
	return sec, nil
}

// openValue opens a sealed value, or passes one stored in the clear by an older gust through;
// sealed tells which it was.
func openValue(sl *sealer, v, ad string) (plain []byte, sealed bool, err error) {
	if !isSealed(v) {
		return []byte(v), false, nil
	}
	plain, err = sl.open(v, ad)
	return plain, true, err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
