package auth

import (
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	for _, tt := range []struct {
		have, need Role
		ok         bool
	}{
		{Owner, Member, true}, {Member, Member, true}, {ReadOnly, Member, false},
		{Member, Owner, false}, {ReadOnly, ReadOnly, true}, {"admin", ReadOnly, false}, {Owner, "", false},
	} {
		if got := tt.have.AtLeast(tt.need); got != tt.ok {
			t.Errorf("%q.AtLeast(%q) = %v", tt.have, tt.need, got)
		}
	}
}

func TestParseBearer(t *testing.T) {
	id, secret := NewCredential()
	gotID, gotSecret, opaque, err := ParseBearer("Bearer " + id + ":" + secret)
	if err != nil || gotID != id || gotSecret != secret || opaque != "" {
		t.Fatalf("a credential: %q %q %q %v", gotID, gotSecret, opaque, err)
	}
	// An opaque token with a colon that is not a token ID stays whole.
	if _, _, opaque, err := ParseBearer("Bearer gst_abc:def"); err != nil || opaque != "gst_abc:def" {
		t.Fatalf("an opaque token: %q %v", opaque, err)
	}
	for _, h := range []string{"", "Bearer ", "Basic xyz", "bearer x"} {
		if _, _, _, err := ParseBearer(h); err == nil {
			t.Errorf("header %q was accepted", h)
		}
	}
}

func TestTokenUsable(t *testing.T) {
	_, secret := NewCredential()
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	tok := Token{ID: "tk-x", Hash: Hash(secret)}
	if !Matches(tok.Hash, secret) || Matches(tok.Hash, secret+"x") {
		t.Fatal("Matches does not tell the secret from another")
	}
	if err := tok.Usable(now); err != nil {
		t.Fatal(err)
	}
	tok.ExpiresAt = &future
	if err := tok.Usable(now); err != nil {
		t.Fatal(err)
	}
	tok.ExpiresAt = &past
	if tok.Usable(now) == nil {
		t.Fatal("an expired token is usable")
	}
	tok.ExpiresAt, tok.RevokedAt = nil, &past
	if tok.Usable(now) == nil {
		t.Fatal("a revoked token is usable")
	}
}
