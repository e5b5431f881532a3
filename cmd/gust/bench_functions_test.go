package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestWithEnv(t *testing.T) {
	got := withEnv([]string{"A=1", "GUST_TOKEN=old", "B=2", "GUST_TOKEN_X=y"}, "GUST_TOKEN=new", "GUST_SERVER_URL=u")
	want := []string{"A=1", "B=2", "GUST_TOKEN_X=y", "GUST_TOKEN=new", "GUST_SERVER_URL=u"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withEnv = %q, want %q", got, want)
	}
}

// mapCall against a fake server: batches of inputs in the json format, and a stream read
// again after it times out, until every output is in.
func TestBenchMapCall(t *testing.T) {
	var mu sync.Mutex
	var args []int // every input's argument, in the order sent
	var batches []int
	send := sender(t)
	addInputs := func(r *http.Request) {
		var body struct {
			Kind   string `json:"kind"`
			Inputs []struct {
				Args   []byte `json:"args"`
				Format string `json:"format"`
			} `json:"inputs"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("inputs: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		batches = append(batches, len(body.Inputs))
		for _, in := range body.Inputs {
			var a struct {
				Args   []int          `json:"args"`
				Kwargs map[string]any `json:"kwargs"`
			}
			if err := json.Unmarshal(in.Args, &a); err != nil || in.Format != "json" || len(a.Args) != 1 || a.Kwargs == nil {
				t.Errorf("input %s (%s): %v", in.Args, in.Format, err)
			}
			args = append(args, a.Args...)
		}
	}
	streams := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/functions/fu-1/calls":
			addInputs(r)
			send(w, map[string]any{"call_id": "fc-1", "first_index": 0, "count": len(args)})
		case r.URL.Path == "/v1/calls/fc-1/inputs":
			addInputs(r)
			send(w, map[string]any{"call_id": "fc-1", "first_index": 0, "count": len(args)})
		case r.URL.Path == "/v1/calls/fc-1/stream":
			streams++
			var from int
			if _, err := fmt.Sscan(r.URL.Query().Get("from"), &from); err != nil {
				t.Errorf("stream from %q: %v", r.URL.Query().Get("from"), err)
			}
			send(w, map[string]any{"log": map[string]any{"index": 0, "stream": "stdout", "data": "x"}})
			// Half of what is left, then a timeout.
			to := from + max(1, (len(args)-from)/2)
			for i := from; i < to; i++ {
				send(w, map[string]any{"output": map[string]any{"index": i, "seq": i, "status": "success", "data": "MQ==", "format": "json"}})
			}
			send(w, map[string]any{"timeout": true})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := newBenchClient(srv.URL, "t", "")
	if _, err := c.mapCall(t.Context(), "fu-1", 2500, 1000); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(batches, []int{1000, 1000, 500}) || len(args) != 2500 || args[0] != 0 || args[2499] != 2499 {
		t.Errorf("batches %v, %d inputs", batches, len(args))
	}
	if streams < 2 {
		t.Errorf("%d streams", streams)
	}
}

func TestBenchMapCallFailure(t *testing.T) {
	send := sender(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/calls") {
			send(w, map[string]any{"call_id": "fc-1", "count": 1})
			return
		}
		send(w, map[string]any{"output": map[string]any{"index": 0, "seq": 0, "status": "failure", "error": "NameError: x"}})
	}))
	defer srv.Close()
	c := newBenchClient(srv.URL, "t", "")
	if _, err := c.mapCall(t.Context(), "fu-1", 1, 1000); err == nil || !strings.Contains(err.Error(), "NameError: x") {
		t.Errorf("err = %v", err)
	}
}

// sender returns a function that writes v as a line of JSON, for fake servers.
func sender(t *testing.T) func(w io.Writer, v any) {
	return func(w io.Writer, v any) {
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Errorf("fake server: %v", err)
		}
	}
}
