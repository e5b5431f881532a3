package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

// DictEntryTTL is how long a Dict entry lives without a read or a write, as in Modal.
const DictEntryTTL = 7 * 24 * time.Hour

// touchEvery bounds the writes that reads cause: a read moves an entry's expiry only when
// its last touch is older than this, far below DictEntryTTL.
const touchEvery = time.Hour

// DictLenCap is the most Dict.len() counts, as in Modal ("will return at most 100,000").
const DictLenCap = 100_000

// DictEntry is one key and value, both as the client pickled them. Keys compare by these
// bytes, as in Modal.
type DictEntry struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// CreateDict makes a named Dict of workspace ws, or an ephemeral one when name is "".
func (s *Store) CreateDict(ctx context.Context, ws, name, createdBy string, allowExisting bool) (KVObject, error) {
	return s.kvCreate(ctx, dictKind, ws, name, createdBy, allowExisting)
}

// LookupDict finds a named Dict of workspace ws, creating it when create is set.
func (s *Store) LookupDict(ctx context.Context, ws, name, createdBy string, create bool) (KVObject, error) {
	if err := CheckObjectName(name, dictKind.what); err != nil {
		return KVObject{}, err
	}
	if create {
		return s.kvCreate(ctx, dictKind, ws, name, createdBy, true)
	}
	return s.kvLookup(ctx, dictKind, ws, name)
}

// GetDict returns a Dict of workspace ws by ID.
func (s *Store) GetDict(ctx context.Context, ws, id string) (KVObject, error) {
	return s.kvGet(ctx, dictKind, ws, id)
}

// ListDicts returns the named Dicts of workspace ws, newest first.
func (s *Store) ListDicts(ctx context.Context, ws string, limit int, before time.Time) ([]KVObject, error) {
	return s.kvList(ctx, dictKind, ws, limit, before)
}

// HeartbeatDict keeps an ephemeral Dict alive.
func (s *Store) HeartbeatDict(ctx context.Context, ws, id string) error {
	return s.kvHeartbeat(ctx, dictKind, ws, id)
}

// DeleteDict removes a Dict of workspace ws and its entries.
func (s *Store) DeleteDict(ctx context.Context, ws, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: delete Dict %s: %w", id, err)
	}
	defer rollback(tx)
	res, err := tx.ExecContext(ctx, `DELETE FROM dicts WHERE id = ? AND workspace_id = ?`, id, ws)
	if err != nil {
		return fmt.Errorf("store: delete Dict %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("Dict %q not found", id)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dict_entries WHERE dict_id = ?`, id); err != nil {
		return fmt.Errorf("store: delete Dict %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: delete Dict %s: %w", id, err)
	}
	return nil
}

// dictTx begins a transaction on a Dict of workspace ws, checking that it exists there.
func (s *Store) dictTx(ctx context.Context, ws, id string) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: Dict %s: %w", id, err)
	}
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM dicts WHERE id = ? AND workspace_id = ?`, id, ws).Scan(&one)
	if err != nil {
		rollback(tx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errdefs.NotFound("Dict %q not found", id)
		}
		return nil, fmt.Errorf("store: Dict %s: %w", id, err)
	}
	return tx, nil
}

// DictUpdate writes entries into a Dict of workspace ws. With ifNotExists (Modal's
// put(skip_if_exists=True), one entry) an existing live key is left alone and created is
// false. quota is the workspace's bytes of Dict and Queue contents (0: no limit).
func (s *Store) DictUpdate(ctx context.Context, ws, id string, entries []DictEntry, ifNotExists bool, quota int64) (created bool, err error) {
	tx, err := s.dictTx(ctx, ws, id)
	if err != nil {
		return false, err
	}
	defer rollback(tx)
	now := time.Now().UnixNano()
	live := now - int64(DictEntryTTL)
	var grow int64
	created = true
	// Later entries with the same key win, as in a Python dict update.
	for _, e := range entries {
		var oldSize int64
		var touched int64
		err := tx.QueryRowContext(ctx, `SELECT length(key) + length(value), touched FROM dict_entries WHERE dict_id = ? AND key = ?`, id, e.Key).Scan(&oldSize, &touched)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			oldSize = 0
		case err != nil:
			return false, fmt.Errorf("store: Dict %s: update: %w", id, err)
		case ifNotExists && touched >= live:
			created = false
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dict_entries(dict_id, key, value, touched) VALUES (?, ?, ?, ?)
			ON CONFLICT(dict_id, key) DO UPDATE SET value = excluded.value, touched = excluded.touched`, id, e.Key, e.Value, now); err != nil {
			return false, fmt.Errorf("store: Dict %s: update: %w", id, err)
		}
		grow += int64(len(e.Key)+len(e.Value)) - oldSize
	}
	if err := checkKVQuota(ctx, tx, ws, grow, quota); err != nil {
		return false, err
	}
	if grow != 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE dicts SET bytes = bytes + ? WHERE id = ?`, grow, id); err != nil {
			return false, fmt.Errorf("store: Dict %s: update: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: Dict %s: update: %w", id, err)
	}
	return created, nil
}

// DictGet returns the value of key in a Dict of workspace ws, and whether it was there; a
// read keeps the entry alive. withValue false only tests the key (Dict.contains).
func (s *Store) DictGet(ctx context.Context, ws, id string, key []byte, withValue bool) ([]byte, bool, error) {
	if _, err := s.GetDict(ctx, ws, id); err != nil {
		return nil, false, err
	}
	now := time.Now().UnixNano()
	col := `x''`
	if withValue {
		col = `value`
	}
	var value []byte
	var touched int64
	err := s.db.QueryRowContext(ctx, `SELECT `+col+`, touched FROM dict_entries WHERE dict_id = ? AND key = ?`, id, key).Scan(&value, &touched)
	if errors.Is(err, sql.ErrNoRows) || err == nil && touched < now-int64(DictEntryTTL) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: Dict %s: get: %w", id, err)
	}
	if touched < now-int64(touchEvery) {
		if _, err := s.db.ExecContext(ctx, `UPDATE dict_entries SET touched = ? WHERE dict_id = ? AND key = ?`, now, id, key); err != nil {
			return nil, false, fmt.Errorf("store: Dict %s: touch: %w", id, err)
		}
	}
	if value == nil {
		value = []byte{}
	}
	return value, true, nil
}

// DictPop removes key from a Dict of workspace ws, returning its value and whether it was there.
func (s *Store) DictPop(ctx context.Context, ws, id string, key []byte) ([]byte, bool, error) {
	tx, err := s.dictTx(ctx, ws, id)
	if err != nil {
		return nil, false, err
	}
	defer rollback(tx)
	var value []byte
	var touched int64
	err = tx.QueryRowContext(ctx, `SELECT value, touched FROM dict_entries WHERE dict_id = ? AND key = ?`, id, key).Scan(&value, &touched)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: Dict %s: pop: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dict_entries WHERE dict_id = ? AND key = ?`, id, key); err != nil {
		return nil, false, fmt.Errorf("store: Dict %s: pop: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE dicts SET bytes = bytes - ? WHERE id = ?`, len(key)+len(value), id); err != nil {
		return nil, false, fmt.Errorf("store: Dict %s: pop: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("store: Dict %s: pop: %w", id, err)
	}
	if touched < time.Now().UnixNano()-int64(DictEntryTTL) {
		return nil, false, nil // it had expired: gone either way
	}
	if value == nil {
		value = []byte{}
	}
	return value, true, nil
}

// DictLen counts the live entries of a Dict of workspace ws, at most DictLenCap.
func (s *Store) DictLen(ctx context.Context, ws, id string) (int, error) {
	if _, err := s.GetDict(ctx, ws, id); err != nil {
		return 0, err
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM dict_entries WHERE dict_id = ? AND touched >= ? LIMIT ?)`,
		id, time.Now().UnixNano()-int64(DictEntryTTL), DictLenCap).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: Dict %s: len: %w", id, err)
	}
	return n, nil
}

// DictClear removes every entry of a Dict of workspace ws.
func (s *Store) DictClear(ctx context.Context, ws, id string) error {
	tx, err := s.dictTx(ctx, ws, id)
	if err != nil {
		return err
	}
	defer rollback(tx)
	if _, err := tx.ExecContext(ctx, `DELETE FROM dict_entries WHERE dict_id = ?`, id); err != nil {
		return fmt.Errorf("store: Dict %s: clear: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE dicts SET bytes = 0 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("store: Dict %s: clear: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: Dict %s: clear: %w", id, err)
	}
	return nil
}

// DictEntries returns up to limit live entries of a Dict of workspace ws whose keys sort
// after after (nil: from the start), in key order: a page of Dict.items(). Reading entries
// does not touch them.
func (s *Store) DictEntries(ctx context.Context, ws, id string, after []byte, limit int, withValues bool) ([]DictEntry, error) {
	if _, err := s.GetDict(ctx, ws, id); err != nil {
		return nil, err
	}
	if after == nil {
		after = []byte{}
	}
	col := `x''`
	if withValues {
		col = `value`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT key, `+col+` FROM dict_entries WHERE dict_id = ? AND key > ? AND touched >= ? ORDER BY key LIMIT ?`,
		id, after, time.Now().UnixNano()-int64(DictEntryTTL), limit)
	if err != nil {
		return nil, fmt.Errorf("store: Dict %s: entries: %w", id, err)
	}
	defer closeRows(rows)
	out := []DictEntry{}
	for rows.Next() {
		var e DictEntry
		if err := rows.Scan(&e.Key, &e.Value); err != nil {
			return nil, fmt.Errorf("store: Dict %s: entries: %w", id, err)
		}
		if !withValues {
			e.Value = nil
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: Dict %s: entries: %w", id, err)
	}
	// SQLite orders BLOBs by memcmp, as bytes.Compare does: pages never overlap.
	for i := 1; i < len(out); i++ {
		if bytes.Compare(out[i-1].Key, out[i].Key) >= 0 {
			return nil, fmt.Errorf("store: Dict %s: entries out of order", id)
		}
	}
	return out, nil
}

// expireDictEntries deletes the expired entries of up to batch Dicts, returning how many
// entries went and from how many Dicts.
func (s *Store) expireDictEntries(ctx context.Context, now time.Time, batch int) (entries int64, dicts int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
	}
	defer rollback(tx)
	cut := now.UnixNano() - int64(DictEntryTTL)
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT dict_id FROM dict_entries WHERE touched < ? LIMIT ?`, cut, batch)
	if err != nil {
		return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
	}
	for _, id := range ids {
		res, err := tx.ExecContext(ctx, `DELETE FROM dict_entries WHERE dict_id = ? AND touched < ?`, id, cut)
		if err != nil {
			return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
		}
		n, _ := res.RowsAffected()
		entries += n
		if _, err := tx.ExecContext(ctx, `UPDATE dicts SET bytes = (SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM dict_entries WHERE dict_id = ?) WHERE id = ?`, id, id); err != nil {
			return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("store: expire Dict entries: %w", err)
	}
	return entries, len(ids), nil
}
