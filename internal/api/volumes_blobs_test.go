package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVolumeBlobsPerWorkspace: a workspace cannot commit, into its own volume, a file that
// only another workspace uploaded by naming its SHA-256 (that would read another's file, or
// learn that it exists); it gets the same answer as for a file nobody stored, and may commit
// the content once it uploaded it itself.
func TestVolumeBlobsPerWorkspace(t *testing.T) {
	ta := newTestAPI(t)
	newVolume := func(cred, name string) string {
		code, body := ta.doAs(t, cred, "POST", "/v1/volumes", `{"name":"`+name+`"}`)
		var v struct {
			ID string `json:"volume_id"`
		}
		if code != 201 || json.Unmarshal([]byte(body), &v) != nil || v.ID == "" {
			t.Fatalf("creating volume %s: %d %s", name, code, body)
		}
		return v.ID
	}
	upload := func(cred, vol, content string) string {
		code, body := ta.doAs(t, cred, "POST", "/v1/volumes/"+vol+"/blobs", content)
		var b struct{ Blob string }
		if code != 201 || json.Unmarshal([]byte(body), &b) != nil || b.Blob == "" {
			t.Fatalf("uploading: %d %s", code, body)
		}
		return b.Blob
	}
	commit := func(cred, vol, blob string) (int, string) {
		return ta.doAs(t, cred, "POST", "/v1/volumes/"+vol+"/commit",
			`{"changes":[{"op":"put","entry":{"path":"stolen.txt","type":"file","blob":"`+blob+`"}}]}`)
	}
	volA := newVolume(testToken, "a-weights")
	blob := upload(testToken, volA, "A's secret weights")
	if code, body := commit(testToken, volA, blob); code != 200 {
		t.Fatalf("A committing its own upload: %d %s", code, body)
	}
	b := ta.newWorkspace(t, "volblobs")
	volB := newVolume(b, "b-vol")
	code, stolen := commit(b, volB, blob)
	const nobodys = "0000000000000000000000000000000000000000000000000000000000000000"
	_, missing := commit(b, volB, nobodys)
	if code != 400 || !strings.Contains(stolen, "is not stored") {
		t.Fatalf("B committing A's blob by its hash: %d %s", code, stolen)
	}
	if strings.ReplaceAll(stolen, blob, nobodys) != missing {
		t.Errorf("A's blob and a blob nobody stored get different answers:\n%s\n%s", stolen, missing)
	}
	if code, body := ta.doAs(t, b, "GET", "/v1/volumes/"+volB+"/content?path=stolen.txt", ""); code != 404 {
		t.Fatalf("B reading the file after the refused commit: %d %s", code, body)
	}
	if got := upload(b, volB, "A's secret weights"); got != blob {
		t.Fatalf("the same content stored under another hash: %s, %s", got, blob)
	}
	if code, body := commit(b, volB, blob); code != 200 {
		t.Fatalf("B committing content it uploaded itself: %d %s", code, body)
	}
}
