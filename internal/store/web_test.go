package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
)

// A web label belongs to one app's function in a workspace: a redeploy of that app keeps it,
// another app's claim is refused (and records none of its functions), the same label in
// another workspace is fine, and a label whose holder stopped is free again.
func TestWebLabelClaims(t *testing.T) {
	st, ctx := open(t), context.Background()
	n := 0
	fn := func(ws, app, name, label string) function.Function {
		n++
		return function.Function{ID: "fu-" + string(rune('a'+n)), AppID: app, WorkspaceID: ws, Name: name, Mode: function.ModeDeployed,
			State: function.StateActive, CreatedAt: time.Now(), Spec: function.Spec{Name: name, Web: &function.Web{Type: function.WebWSGI, Label: label}}}
	}
	first := fn("ws-1", "ap-1", "web", "echo")
	if _, err := st.InsertFunctions(ctx, []function.Function{first}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{fn("ws-1", "ap-1", "web", "echo")}, true); err != nil {
		t.Fatalf("a redeploy of the same app: %v", err)
	}
	clash := fn("ws-1", "ap-2", "other", "echo")
	if _, err := st.InsertFunctions(ctx, []function.Function{clash}, true); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("another app's claim: %v, want a conflict", err)
	}
	if _, err := st.GetFunction(ctx, clash.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the refused app's function was recorded: %v", err)
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{fn("ws-1", "ap-3", "a", "twice"), fn("ws-1", "ap-3", "b", "twice")}, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("two functions of one publish with one label: %v, want a conflict", err)
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{fn("ws-2", "ap-4", "web", "echo")}, true); err != nil {
		t.Fatalf("the same label in another workspace: %v", err)
	}
	fns, err := st.ListFunctions(ctx, "ap-1", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fns {
		if err := st.SetFunctionState(ctx, f.ID, function.StateStopped); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.InsertFunctions(ctx, []function.Function{fn("ws-1", "ap-2", "other", "echo")}, true); err != nil {
		t.Fatalf("a label whose holder stopped: %v", err)
	}
}
