package store

import (
	"context"
	"fmt"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
)

// webSchema holds web endpoints' labels: a label is unique in its workspace, held by one
// function of one app at a time (docs/api.md, "Web endpoints").
const webSchema = `
CREATE TABLE IF NOT EXISTS web_labels (
	workspace_id TEXT NOT NULL,
	label TEXT NOT NULL,
	app_id TEXT NOT NULL,
	function_name TEXT NOT NULL,
	function_id TEXT NOT NULL,
	PRIMARY KEY (workspace_id, label)
);
`

func (s *Store) migrateWeb(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, webSchema); err != nil {
		return fmt.Errorf("store: create the web endpoints' table: %w", err)
	}
	return nil
}

// claimWebLabels gives each web endpoint among fns its label, in the transaction that records
// them: a label stays with the app and function that hold it (a redeploy takes it over) and
// is free again once its holder is no longer active; any other claim is a conflict, and the
// whole publish fails.
func claimWebLabels(ctx context.Context, tx execer, fns []function.Function) error {
	for _, fn := range fns {
		w := fn.Spec.Web
		if w == nil || fn.VariantOf != "" {
			continue
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO web_labels(workspace_id, label, app_id, function_name, function_id) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(workspace_id, label) DO UPDATE SET app_id = excluded.app_id, function_name = excluded.function_name, function_id = excluded.function_id
			WHERE (web_labels.app_id = excluded.app_id AND web_labels.function_name = excluded.function_name)
			   OR COALESCE((SELECT state FROM functions WHERE id = web_labels.function_id), 'stopped') <> 'active'`,
			fn.WorkspaceID, w.Label, fn.AppID, fn.Name, fn.ID)
		if err != nil {
			return fmt.Errorf("store: claim web label %q: %w", w.Label, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: claim web label %q: %w", w.Label, err)
		} else if n == 0 {
			return errdefs.Conflict("the web endpoint label %q is already used by another function in this workspace: give this one another label=", w.Label)
		}
	}
	return nil
}
