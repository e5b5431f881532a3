package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Sealed values are rewritten in two cases: once at open, for what an older gust stored in the
// clear (named secrets, the inline secrets of functions, and the environment it copied into
// function containers' rows), and by RotateSecretKey, which moves every value to a new key.

// resealStats counts what a reseal pass saw.
type resealStats struct {
	opened   int      // sealed values that opened
	rewrote  int      // rows written again
	unopened []string // records whose sealed values did not open
}

// reseal rewrites the sealed values of secrets and functions: each is opened with from (or
// taken as it is, if an older gust stored it in the clear) and sealed with to. A row already
// sealed with to (from == to) is left as it is. With strict, a value that does not open is an
// error; otherwise it is counted and left.
func reseal(ctx context.Context, tx *sql.Tx, from, to *sealer, strict bool) (resealStats, error) {
	var st resealStats
	if err := resealSecrets(ctx, tx, from, to, strict, &st); err != nil {
		return st, err
	}
	if err := resealFunctions(ctx, tx, from, to, strict, &st); err != nil {
		return st, err
	}
	return st, nil
}

func resealSecrets(ctx context.Context, tx *sql.Tx, from, to *sealer, strict bool, st *resealStats) error {
	rows, err := loadSecretRows(ctx, tx, "")
	if err != nil {
		return err
	}
	for _, r := range rows {
		plain, sealed, err := openValue(from, r.env, secretAD(r.id, r.name))
		if err != nil {
			if strict {
				return fmt.Errorf("store: secret %q: %w", r.name, err)
			}
			st.unopened = append(st.unopened, "secret "+r.name)
			continue
		}
		if sealed {
			st.opened++
			if from == to {
				continue
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE secrets SET env = ? WHERE id = ?`, to.seal(plain, secretAD(r.id, r.name)), r.id); err != nil {
			return fmt.Errorf("store: seal secret %q: %w", r.name, err)
		}
		st.rewrote++
	}
	return nil
}

// resealFunctions does for the inline secrets of functions (Secret.from_dict) what
// resealSecrets does for named ones.
func resealFunctions(ctx context.Context, tx *sql.Tx, from, to *sealer, strict bool, st *resealStats) error {
	docs, err := loadFunctionDocsWithSecrets(ctx, tx)
	if err != nil {
		return err
	}
	for id, doc := range docs {
		var d functionDoc
		if err := json.Unmarshal([]byte(doc), &d); err != nil {
			return fmt.Errorf("store: corrupt function record %s: %w", id, err)
		}
		inClear, sealed := hasInlineSecrets(d.Spec.Secrets), len(d.SealedSecrets)
		if err := d.openInline(from); err != nil {
			if strict {
				return err
			}
			st.unopened = append(st.unopened, "function "+id)
			continue
		}
		st.opened += sealed
		if !inClear && (sealed == 0 || from == to) {
			continue
		}
		if err := writeFunctionDoc(ctx, tx, &d, to); err != nil {
			return err
		}
		st.rewrote++
	}
	return nil
}

// loadFunctionDocsWithSecrets reads the records of the functions that name secrets, by ID.
func loadFunctionDocsWithSecrets(ctx context.Context, tx *sql.Tx) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, doc FROM functions WHERE doc LIKE '%"secrets":%'`)
	if err != nil {
		return nil, fmt.Errorf("store: read functions' secrets: %w", err)
	}
	defer closeRows(rows)
	out := map[string]string{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			return nil, fmt.Errorf("store: read functions' secrets: %w", err)
		}
		out[id] = doc
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read functions' secrets: %w", err)
	}
	return out, nil
}

func writeFunctionDoc(ctx context.Context, tx *sql.Tx, d *functionDoc, to *sealer) error {
	if err := d.sealInline(to); err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("store: encode function %s: %w", d.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE functions SET doc = ? WHERE id = ?`, string(b), d.ID); err != nil {
		return fmt.Errorf("store: seal the inline secrets of function %s: %w", d.ID, err)
	}
	return nil
}

// prepareSecrets runs when the store opens: it seals what an older gust stored in the clear,
// drops the environment an older gust copied into function containers' rows, and refuses a
// key that opens none of the sealed values. What it replaces is overwritten with zeros
// (secure_delete) and the write-ahead log is truncated, so no copy in the clear stays in the
// database's files.
func (s *Store) prepareSecrets(ctx context.Context) (retErr error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: seal secrets: %w", err)
	}
	defer func() {
		if err := conn.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("store: seal secrets: %w", err)
		}
	}()
	if _, err := conn.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return fmt.Errorf("store: seal secrets: %w", err)
	}
	changed, err := s.resealAtOpen(ctx, conn)
	if _, perr := conn.ExecContext(ctx, `PRAGMA secure_delete = OFF`); err == nil && perr != nil {
		err = fmt.Errorf("store: seal secrets: %w", perr)
	}
	if err != nil || !changed {
		return err
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("store: seal secrets: checkpoint: %w", err)
	}
	return nil
}

// resealAtOpen is prepareSecrets' transaction; changed tells whether it wrote anything.
func (s *Store) resealAtOpen(ctx context.Context, conn *sql.Conn) (changed bool, err error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store: seal secrets: %w", err)
	}
	defer rollback(tx)
	st, err := reseal(ctx, tx, s.seal, s.seal, false)
	if err != nil {
		return false, err
	}
	if st.opened == 0 && len(st.unopened) > 0 {
		return false, fmt.Errorf("store: the secret key does not open any sealed value in this database (%d records, first %s): %w",
			len(st.unopened), st.unopened[0], ErrWrongSecretKey)
	}
	scrubbed, err := scrubContainerEnv(ctx, tx)
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: seal secrets: %w", err)
	}
	return st.rewrote > 0 || scrubbed, nil
}

// scrubContainerEnv removes, once, the environment from the rows of function containers that
// an older gust wrote: it held the values of the function's secrets. Rows written since hold
// no secret values (sandbox.Sandbox.SecretEnv is never stored).
func scrubContainerEnv(ctx context.Context, tx *sql.Tx) (bool, error) {
	const key = "function_container_env_scrubbed"
	var v string
	err := tx.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE key = ?`, key).Scan(&v)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("store: scrub function containers' rows: %w", err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE sandboxes SET doc = json_remove(doc, '$.env')
		WHERE json_extract(doc, '$.function_id') IS NOT NULL AND json_extract(doc, '$.env') IS NOT NULL`)
	if err != nil {
		return false, fmt.Errorf("store: scrub function containers' rows: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: scrub function containers' rows: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO store_meta(key, value) VALUES (?, '1')`, key); err != nil {
		return false, fmt.Errorf("store: scrub function containers' rows: %w", err)
	}
	return n > 0, nil
}

// RotateSecretKey seals every secret value again under next, in one transaction, and uses next
// from then on. It returns how many records it rewrote. A value that does not open with the
// current key fails the rotation and changes nothing. The caller saves next (WriteSecretKey)
// after it returns; until then the database opens only with next, so it saves next first under
// another name (see `gust secret rotate-key`).
func (s *Store) RotateSecretKey(ctx context.Context, next SecretKey) (int, error) {
	to, err := newSealer(next)
	if err != nil {
		return 0, err
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: rotate the secret key: %w", err)
	}
	defer rollback(tx)
	st, err := reseal(ctx, tx, s.seal, to, true)
	if err != nil {
		return 0, fmt.Errorf("store: rotate the secret key: nothing was changed: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: rotate the secret key: %w", err)
	}
	s.seal = to
	return st.rewrote, nil
}
