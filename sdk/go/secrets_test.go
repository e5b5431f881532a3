package gust

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeSecrets serves the secrets API from a map.
func fakeSecrets(t *testing.T, f *fakeAPI) map[string]map[string]string {
	store := map[string]map[string]string{}
	var mu sync.Mutex
	doc := func(name string) map[string]any {
		return map[string]any{"secret_id": "se-" + name, "name": name, "keys": sortedKeys(store[name]), "created_at": "2026-01-02T03:04:05Z"}
	}
	f.handle("POST /v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var body struct {
			Name      string            `json:"name"`
			Env       map[string]string `json:"env"`
			Overwrite bool              `json:"overwrite"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
		}
		if _, ok := store[body.Name]; ok && !body.Overwrite {
			writeErr(w, http.StatusConflict, "conflict", "secret "+body.Name+" exists: pass overwrite to replace it")
			return
		}
		store[body.Name] = body.Env
		writeJSON(w, http.StatusCreated, doc(body.Name))
	})
	f.handle("GET /v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var out []any
		names := map[string]string{}
		for name := range store {
			names[name] = ""
		}
		for _, name := range sortedKeys(names) {
			out = append(out, doc(name))
		}
		writeJSON(w, http.StatusOK, map[string]any{"secrets": out})
	})
	f.handle("POST /v1/secrets/lookup", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		name, _ := decodeBody(t, r)["name"].(string)
		if _, ok := store[name]; !ok {
			writeErr(w, http.StatusNotFound, "not_found", "no secret "+name)
			return
		}
		writeJSON(w, http.StatusOK, doc(name))
	})
	f.handle("DELETE /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		name := r.PathValue("name")
		if _, ok := store[name]; !ok {
			writeErr(w, http.StatusNotFound, "not_found", "no secret "+name)
			return
		}
		delete(store, name)
		w.WriteHeader(http.StatusNoContent)
	})
	return store
}

func TestSecrets(t *testing.T) {
	f, c := newFakeAPI(t)
	store := fakeSecrets(t, f)
	ctx := t.Context()

	s, err := c.CreateSecret(ctx, "a", map[string]string{"K": "v", "A": "1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "se-a" || s.Name != "a" || !reflect.DeepEqual(s.Keys, []string{"A", "K"}) || s.CreatedAt.IsZero() {
		t.Errorf("secret = %+v", s)
	}
	if _, err := c.CreateSecret(ctx, "a", map[string]string{"K": "w"}, false); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("existing secret: %v", err)
	}
	if _, err := c.CreateSecret(ctx, "a", map[string]string{"K": "w"}, true); err != nil || store["a"]["K"] != "w" {
		t.Errorf("overwrite: %v, %v", err, store["a"])
	}
	if _, err := c.CreateSecret(ctx, "b", nil, false); err != nil {
		t.Fatal(err)
	}

	list, err := c.ListSecrets(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Fatalf("ListSecrets = %+v, %v", list, err)
	}
	if s, err := c.LookupSecret(ctx, "a"); err != nil || s.Keys[0] != "K" {
		t.Errorf("LookupSecret = %+v, %v", s, err)
	}
	if _, err := c.LookupSecret(ctx, "zz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing secret: %v", err)
	}
	if err := c.DeleteSecret(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSecret(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting again: %v", err)
	}
}
