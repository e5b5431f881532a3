package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
)

// functionsSchema holds functions, their calls and inputs (the durable queue), named secrets
// (env: sealed, see secretkey.go) and the apps' logs.
const functionsSchema = `
CREATE TABLE IF NOT EXISTS functions (
	id TEXT PRIMARY KEY,
	app_id TEXT NOT NULL,
	name TEXT NOT NULL,
	mode TEXT NOT NULL,
	state TEXT NOT NULL,
	created_at TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS functions_app ON functions(app_id, name, state);
CREATE TABLE IF NOT EXISTS calls (
	id TEXT PRIMARY KEY,
	function_id TEXT NOT NULL,
	created_at TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (
	id TEXT PRIMARY KEY,
	call_id TEXT NOT NULL,
	function_id TEXT NOT NULL,
	idx INTEGER NOT NULL,
	status TEXT NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	seq INTEGER NOT NULL DEFAULT -1,
	format TEXT NOT NULL,
	args BLOB,
	result BLOB,
	exc BLOB,
	error TEXT NOT NULL DEFAULT '',
	traceback TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	done_at TEXT
);
CREATE INDEX IF NOT EXISTS inputs_call ON inputs(call_id);

CREATE TABLE IF NOT EXISTS secrets (
	id TEXT PRIMARY KEY,
	workspace_id TEXT NOT NULL DEFAULT 'ws-default',
	name TEXT NOT NULL,
	env TEXT NOT NULL,
	created_at TEXT NOT NULL,
	UNIQUE(workspace_id, name)
);
CREATE TABLE IF NOT EXISTS app_logs (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	app_id TEXT NOT NULL,
	function_id TEXT NOT NULL,
	input_id TEXT NOT NULL,
	stream TEXT NOT NULL,
	data TEXT NOT NULL,
	time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS app_logs_app ON app_logs(app_id, seq);
`

// InsertFunctions records newly published functions and, for a deploy, marks the app's earlier
// deployed functions replaced, in one transaction.
func (s *Store) InsertFunctions(ctx context.Context, fns []function.Function, replace bool) (replaced []string, err error) {
	defer s.holdKey()()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: insert functions: %w", err)
	}
	defer rollback(tx)
	if replace && len(fns) > 0 {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM functions WHERE app_id = ? AND mode = ? AND state = ?`, fns[0].AppID, function.ModeDeployed, function.StateActive)
		if err != nil {
			return nil, fmt.Errorf("store: find the functions a deploy replaces: %w", err)
		}
		if replaced, err = scanStrings(rows); err != nil {
			return nil, fmt.Errorf("store: find the functions a deploy replaces: %w", err)
		}
		for _, id := range replaced {
			if err := setFunctionState(ctx, tx, id, function.StateReplaced); err != nil {
				return nil, err
			}
		}
	}
	for _, fn := range fns {
		doc, err := s.encodeFunction(fn)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO functions(id, app_id, name, mode, state, created_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			fn.ID, fn.AppID, fn.Name, fn.Mode, fn.State, fn.CreatedAt.Format(time.RFC3339Nano), doc); err != nil {
			return nil, fmt.Errorf("store: insert function %s: %w", fn.Name, err)
		}
	}
	if err := claimWebLabels(ctx, tx, fns); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: insert functions: %w", err)
	}
	return replaced, nil
}

type execer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// setFunctionState moves a function to state through its lifecycle; moving to the state it is
// in already changes nothing.
func setFunctionState(ctx context.Context, db execer, id string, state function.State) error {
	var doc string
	if err := db.QueryRowContext(ctx, `SELECT doc FROM functions WHERE id = ?`, id).Scan(&doc); err != nil {
		return fmt.Errorf("store: function %s: %w", id, err)
	}
	// Decoded as stored, inline secrets sealed: a change of state needs no key.
	var fn functionDoc
	if err := json.Unmarshal([]byte(doc), &fn); err != nil {
		return fmt.Errorf("store: corrupt function record %s: %w", id, err)
	}
	if fn.State == state {
		return nil
	}
	if err := function.StateMachine.Move(&fn.State, state); err != nil {
		return fmt.Errorf("store: function %s: %w", id, err)
	}
	b, err := json.Marshal(fn)
	if err != nil {
		return fmt.Errorf("store: encode function %s: %w", id, err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE functions SET state = ?, doc = ? WHERE id = ?`, state, string(b), id); err != nil {
		return fmt.Errorf("store: set function %s %s: %w", id, state, err)
	}
	return nil
}

// UpdateFunction writes a function's record (its spec changed).
func (s *Store) UpdateFunction(ctx context.Context, fn function.Function) error {
	defer s.holdKey()()
	doc, err := s.encodeFunction(fn)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE functions SET doc = ? WHERE id = ?`, doc, fn.ID); err != nil {
		return fmt.Errorf("store: update function %s: %w", fn.ID, err)
	}
	return nil
}

// SetFunctionState changes a function's state.
func (s *Store) SetFunctionState(ctx context.Context, id string, state function.State) error {
	return setFunctionState(ctx, s.db, id, state)
}

// GetFunction returns a function by ID.
func (s *Store) GetFunction(ctx context.Context, id string) (function.Function, error) {
	defer s.holdKey()()
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM functions WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return function.Function{}, errdefs.NotFound("function %q not found", id)
	}
	if err != nil {
		return function.Function{}, fmt.Errorf("store: get function %s: %w", id, err)
	}
	return s.decodeFunction(doc)
}

// functionDoc is a function as stored: the values of its inline secrets (Secret.from_dict)
// sealed, by their index in Spec.Secrets, and left out of the spec.
type functionDoc struct {
	function.Function
	SealedSecrets map[int]string `json:"sealed_secrets,omitempty"`
}

// inlineAD is the additional data of a function's i-th inline secret.
func inlineAD(fnID string, i int) string {
	return fmt.Sprintf("gust function\x00%s\x00inline secret %d", fnID, i)
}

func hasInlineSecrets(secs []function.SecretRef) bool {
	return slices.ContainsFunc(secs, func(sec function.SecretRef) bool { return sec.Env != nil })
}

// sealInline moves the values of the function's inline secrets into SealedSecrets. The spec's
// slice is copied, not changed.
func (d *functionDoc) sealInline(sl *sealer) error {
	if !hasInlineSecrets(d.Spec.Secrets) {
		return nil
	}
	secs := slices.Clone(d.Spec.Secrets)
	for i, sec := range secs {
		if sec.Env == nil {
			continue
		}
		b, err := json.Marshal(sec.Env)
		if err != nil {
			return fmt.Errorf("store: encode the inline secrets of function %s: %w", d.ID, err)
		}
		if d.SealedSecrets == nil {
			d.SealedSecrets = map[int]string{}
		}
		d.SealedSecrets[i] = sl.seal(b, inlineAD(d.ID, i))
		secs[i].Env = nil
	}
	d.Spec.Secrets = secs
	return nil
}

// openInline puts the sealed values back into the function's inline secrets. Its errors never
// quote them.
func (d *functionDoc) openInline(sl *sealer) error {
	if len(d.SealedSecrets) == 0 {
		return nil
	}
	secs := slices.Clone(d.Spec.Secrets)
	for i, v := range d.SealedSecrets {
		if i < 0 || i >= len(secs) {
			return fmt.Errorf("store: corrupt function record %s: a sealed inline secret has index %d of %d", d.ID, i, len(secs))
		}
		b, err := sl.open(v, inlineAD(d.ID, i))
		if err != nil {
			return fmt.Errorf("store: function %s: inline secret %d cannot be read: %w; restore the secret key it was written with", d.ID, i, err)
		}
		if err := json.Unmarshal(b, &secs[i].Env); err != nil {
			return fmt.Errorf("store: corrupt function record %s: inline secret %d is not a JSON object", d.ID, i)
		}
	}
	d.Spec.Secrets, d.SealedSecrets = secs, nil
	return nil
}

// encodeFunction is a function's stored record. The caller holds the key (holdKey).
func (s *Store) encodeFunction(fn function.Function) (string, error) {
	d := functionDoc{Function: fn}
	if err := d.sealInline(s.seal); err != nil {
		return "", err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("store: encode function %s: %w", fn.ID, err)
	}
	return string(b), nil
}

// decodeFunction reads a stored record. The caller holds the key (holdKey).
func (s *Store) decodeFunction(doc string) (function.Function, error) {
	var d functionDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return function.Function{}, fmt.Errorf("store: corrupt function record: %w", err)
	}
	if err := d.openInline(s.seal); err != nil {
		return function.Function{}, err
	}
	if d.Function.WorkspaceID == "" {
		d.Function.WorkspaceID = auth.DefaultWorkspace // published before workspaces
	}
	return d.Function, nil
}

// DeployedFunction finds the active deployed function called name in an app.
func (s *Store) DeployedFunction(ctx context.Context, appID, name string) (function.Function, error) {
	defer s.holdKey()()
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM functions WHERE app_id = ? AND name = ? AND mode = ? AND state = ? ORDER BY created_at DESC LIMIT 1`,
		appID, name, function.ModeDeployed, function.StateActive).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return function.Function{}, errdefs.NotFound("no deployed function %q in this app; deploy it with `gust deploy` or app.deploy()", name)
	}
	if err != nil {
		return function.Function{}, fmt.Errorf("store: deployed function %q: %w", name, err)
	}
	return s.decodeFunction(doc)
}

// ListFunctions returns functions: of one app (appID set) and/or only the active ones.
func (s *Store) ListFunctions(ctx context.Context, appID string, activeOnly bool) ([]function.Function, error) {
	defer s.holdKey()()
	q := `SELECT doc FROM functions WHERE 1=1`
	var args []any
	if appID != "" {
		q += ` AND app_id = ?`
		args = append(args, appID)
	}
	if activeOnly {
		q += ` AND state != 'stopped'`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list functions: %w", err)
	}
	defer closeRows(rows)
	var out []function.Function
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("store: list functions: %w", err)
		}
		fn, err := s.decodeFunction(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, fn)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list functions: %w", err)
	}
	return out, nil
}

// PutCall writes a call's record (created, or its count or cancellation changed).
func (s *Store) PutCall(ctx context.Context, c function.Call) error {
	doc, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: encode call %s: %w", c.ID, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO calls(id, function_id, created_at, doc) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc`,
		c.ID, c.FunctionID, c.CreatedAt.Format(time.RFC3339Nano), string(doc)); err != nil {
		return fmt.Errorf("store: put call %s: %w", c.ID, err)
	}
	return nil
}

// AddInputs records a call (its new count) and new inputs in one transaction: once it
// returns, the inputs survive a restart.
func (s *Store) AddInputs(ctx context.Context, c function.Call, ins []function.Input) error {
	doc, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: encode call %s: %w", c.ID, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: add inputs to call %s: %w", c.ID, err)
	}
	defer rollback(tx)
	if _, err := tx.ExecContext(ctx, `INSERT INTO calls(id, function_id, created_at, doc) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc`,
		c.ID, c.FunctionID, c.CreatedAt.Format(time.RFC3339Nano), string(doc)); err != nil {
		return fmt.Errorf("store: record call: %w", err)
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO inputs(id, call_id, function_id, idx, status, format, args, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("store: add inputs to call %s: %w", c.ID, err)
	}
	defer closeStmt(st)
	for _, in := range ins {
		if _, err := st.ExecContext(ctx, in.ID, in.CallID, in.FunctionID, in.Index, in.Status, in.Format, in.Args, in.CreatedAt.Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("store: record input: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: add inputs to call %s: %w", c.ID, err)
	}
	return nil
}

// GetCall returns a call by ID.
func (s *Store) GetCall(ctx context.Context, id string) (function.Call, error) {
	var doc string
	err := s.db.QueryRowContext(ctx, `SELECT doc FROM calls WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return function.Call{}, errdefs.NotFound("function call %q not found", id)
	}
	if err != nil {
		return function.Call{}, fmt.Errorf("store: get call %s: %w", id, err)
	}
	var c function.Call
	if err := json.Unmarshal([]byte(doc), &c); err != nil {
		return function.Call{}, fmt.Errorf("store: corrupt call record %s: %w", id, err)
	}
	if c.WorkspaceID == "" {
		c.WorkspaceID = auth.DefaultWorkspace // made before workspaces
	}
	return c, nil
}

// FinishInputs records outputs in one transaction.
func (s *Store) FinishInputs(ctx context.Context, ins []function.Input) error {
	if len(ins) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: finish inputs: %w", err)
	}
	defer rollback(tx)
	st, err := tx.PrepareContext(ctx, `UPDATE inputs SET status = ?, attempts = ?, seq = ?, result = ?, exc = ?, error = ?, traceback = ?, done_at = ?, args = NULL WHERE id = ?`)
	if err != nil {
		return fmt.Errorf("store: finish inputs: %w", err)
	}
	defer closeStmt(st)
	for _, in := range ins {
		done := time.Now().UTC().Format(time.RFC3339Nano)
		if in.DoneAt != nil {
			done = in.DoneAt.Format(time.RFC3339Nano)
		}
		if _, err := st.ExecContext(ctx, in.Status, in.Attempts, in.Seq, in.Result, in.Exc, in.Error, in.Traceback, done, in.ID); err != nil {
			return fmt.Errorf("store: finish input %s: %w", in.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: finish inputs: %w", err)
	}
	return nil
}

// CallOutputs returns a call's finished inputs with seq ≥ from, in completion order.
func (s *Store) CallOutputs(ctx context.Context, callID string, from int) ([]function.Input, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, idx, status, attempts, seq, format, result, exc, error, traceback FROM inputs WHERE call_id = ? AND seq >= ? ORDER BY seq`, callID, from)
	if err != nil {
		return nil, fmt.Errorf("store: outputs of call %s: %w", callID, err)
	}
	defer closeRows(rows)
	var out []function.Input
	for rows.Next() {
		in := function.Input{CallID: callID}
		if err := rows.Scan(&in.ID, &in.Index, &in.Status, &in.Attempts, &in.Seq, &in.Format, &in.Result, &in.Exc, &in.Error, &in.Traceback); err != nil {
			return nil, fmt.Errorf("store: outputs of call %s: %w", callID, err)
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: outputs of call %s: %w", callID, err)
	}
	return out, nil
}

// OpenInputs returns every input not yet done, oldest first: what a restarted server must
// still run.
func (s *Store) OpenInputs(ctx context.Context) ([]function.Input, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, call_id, function_id, idx, status, attempts, format, args, created_at FROM inputs WHERE status IN ('pending', 'running') ORDER BY created_at`)
	if err != nil {
		return nil, fmt.Errorf("store: open inputs: %w", err)
	}
	defer closeRows(rows)
	var out []function.Input
	for rows.Next() {
		var in function.Input
		var created string
		if err := rows.Scan(&in.ID, &in.CallID, &in.FunctionID, &in.Index, &in.Status, &in.Attempts, &in.Format, &in.Args, &created); err != nil {
			return nil, fmt.Errorf("store: open inputs: %w", err)
		}
		if in.CreatedAt, err = parseTime("input "+in.ID, created); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: open inputs: %w", err)
	}
	return out, nil
}

// LogLine is one line of an app's logs.
type LogLine struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	AppID      string    `json:"-"`
	FunctionID string    `json:"function_id"`
	InputID    string    `json:"input_id,omitempty"`
	Stream     string    `json:"stream"`
	Data       string    `json:"data"`
}

// AppendLogs keeps log lines.
func (s *Store) AppendLogs(ctx context.Context, lines []LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: append logs: %w", err)
	}
	defer rollback(tx)
	st, err := tx.PrepareContext(ctx, `INSERT INTO app_logs(app_id, function_id, input_id, stream, data, time) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("store: append logs: %w", err)
	}
	defer closeStmt(st)
	for _, l := range lines {
		if _, err := st.ExecContext(ctx, l.AppID, l.FunctionID, l.InputID, l.Stream, l.Data, l.Time.Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("store: append logs: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: append logs: %w", err)
	}
	return nil
}

// AppLogs returns an app's log lines after seq since, at most limit.
func (s *Store) AppLogs(ctx context.Context, appID string, since int64, limit int) ([]LogLine, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, function_id, input_id, stream, data, time FROM app_logs WHERE app_id = ? AND seq > ? ORDER BY seq LIMIT ?`, appID, since, limit)
	if err != nil {
		return nil, fmt.Errorf("store: logs of app %s: %w", appID, err)
	}
	defer closeRows(rows)
	var out []LogLine
	for rows.Next() {
		l := LogLine{AppID: appID}
		var t string
		if err := rows.Scan(&l.Seq, &l.FunctionID, &l.InputID, &l.Stream, &l.Data, &t); err != nil {
			return nil, fmt.Errorf("store: logs of app %s: %w", appID, err)
		}
		if l.Time, err = parseTime(fmt.Sprintf("log line %d", l.Seq), t); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: logs of app %s: %w", appID, err)
	}
	return out, nil
}

// Prune forgets finished inputs and app log lines older than before, and calls left without
// inputs: outputs are kept for a week, as Modal keeps a spawned call's result.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := before.UTC().Format(time.RFC3339Nano)
	var n int64
	for _, q := range []string{
		`DELETE FROM inputs WHERE seq >= 0 AND done_at < ?`,
		`DELETE FROM app_logs WHERE time < ?`,
		`DELETE FROM calls WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM inputs WHERE inputs.call_id = calls.id)`,
	} {
		res, err := s.db.ExecContext(ctx, q, cut)
		if err != nil {
			return n, fmt.Errorf("store: prune: %w", err)
		}
		m, err := res.RowsAffected()
		if err != nil {
			return n, fmt.Errorf("store: prune: %w", err)
		}
		n += m
	}
	// Each app keeps at most its newest MaxAppLogBytes of log lines, however young.
	res, err := s.db.ExecContext(ctx, `DELETE FROM app_logs WHERE seq IN (SELECT seq FROM
		(SELECT seq, SUM(length(data)) OVER (PARTITION BY app_id ORDER BY seq DESC) AS kept FROM app_logs) WHERE kept > ?)`, MaxAppLogBytes)
	if err != nil {
		return n, fmt.Errorf("store: prune app logs: %w", err)
	}
	m, err := res.RowsAffected()
	if err != nil {
		return n, fmt.Errorf("store: prune app logs: %w", err)
	}
	return n + m, nil
}

// MaxAppLogBytes bounds the log lines one app keeps (Prune drops the oldest beyond it).
const MaxAppLogBytes = 64 << 20

// scanStrings reads a one-column result set of strings and closes it.
func scanStrings(rows *sql.Rows) ([]string, error) {
	defer closeRows(rows)
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
