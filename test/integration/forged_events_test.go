package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
)

const forgeModule = `
import base64, json, pickle, time
import gust

def victim():
    yield gust.current_input_id()
    time.sleep(8)
    yield "done"

def attacker(victim_id):
    # The runner's own channel to the worker, as compromised function code would use it.
    import gust._runner as R
    r = R._runner
    r.send({"type": "item", "id": victim_id, "data": base64.b64encode(pickle.dumps("FORGED")).decode(), "format": "pickle"})
    r.send({"type": "item", "id": victim_id, "data": base64.b64encode(json.dumps("FORGED").encode()).decode(), "format": "json"})
    r.send({"type": "log", "id": victim_id, "stream": "stdout", "data": "FORGED LOG\n"})
    r.send({"type": "output", "id": victim_id, "status": "success", "format": "json",
            "data": base64.b64encode(json.dumps("FORGED").encode()).decode(), "error": None, "traceback": None, "exc": None})
    return "sent"
`

// TestForgedEventsFromAContainer: function code in one container writes generator items (a
// pickle among them, which the Python SDK would unpickle on the caller's machine), a log line
// and an output for an input that another container holds, on its runner's real channel to
// the worker. The victim's caller sees none of it: its items, logs and result are its own.
func TestForgedEventsFromAContainer(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	blob := uploadCode(t, map[string]string{"forgemod.py": forgeModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "forged-events", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "forgemod"},
		"functions": []map[string]any{{"name": "victim", "image_id": gust.imageID, "is_generator": true}, {"name": "attacker", "image_id": gust.imageID}}}, &app); err != nil {
		t.Fatal(err)
	}
	defer api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil)
	c, err := sdk.NewClient(sdk.Config{ServerURL: gust.url, Token: gust.token})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := c.Function(ctx, app.Functions["victim"])
	if err != nil {
		t.Fatal(err)
	}
	attacker, err := c.Function(ctx, app.Functions["attacker"])
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	victim.Stdout, victim.Stderr = &logs, &logs
	attacker.Stdout, attacker.Stderr = &logs, &logs
	var items []string
	for item, err := range victim.RemoteGen(ctx, nil, nil) {
		if err != nil {
			t.Fatalf("the victim's stream: %v (items so far %q)", err, items)
		}
		var s string
		if err := json.Unmarshal(item, &s); err != nil {
			t.Fatal(err)
		}
		items = append(items, s)
		if len(items) == 1 {
			// The victim runs, holding its input: the attacker forges events for it.
			if !strings.HasPrefix(s, "in-") {
				t.Fatalf("the victim's first item is %q, want its input id", s)
			}
			v, err := attacker.Remote(ctx, s)
			if err != nil || v != "sent" {
				t.Fatalf("attacker: %v %v", v, err)
			}
		}
	}
	if len(items) != 2 || items[1] != "done" {
		t.Fatalf("the victim's items: %q, want its input id and \"done\" only", items)
	}
	if strings.Contains(logs.String(), "FORGED") {
		t.Fatalf("a forged log reached the victim's caller: %q", logs.String())
	}
}
