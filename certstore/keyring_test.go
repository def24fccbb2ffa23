package certstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/midsummer/certmgr/internal/testpeers"
)

func TestParseKeyringRefusesBadKeys(t *testing.T) {
	t.Parallel()
	k := testpeers.StoreKey()
	for _, tc := range []struct{ in, want string }{
		{"", "not set"},
		{"  ", "not set"},
		{"bm90IDMyIGJ5dGVz", "decodes to 12 bytes"},
		{"%%%", "not base64"},
		{k + "," + k, "twice"},
		{k + "," + testpeers.StoreKey() + "," + testpeers.StoreKey(), "at most two"},
	} {
		_, err := ParseKeyring(tc.in)
		var ke *KeyError
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeyring(%q) = %v, want a KeyError saying %q", tc.in, err, tc.want)
		}
	}
}

func TestKeyringSealsUnderPrimaryAndOpensWithEither(t *testing.T) {
	t.Parallel()
	oldKey, newKey_ := testpeers.StoreKey(), testpeers.StoreKey()
	old, _ := ParseKeyring(oldKey)
	both, err := ParseKeyring(newKey_ + "," + oldKey)
	if err != nil {
		t.Fatal(err)
	}
	id, sealed := old.Seal("privkey:a:1", []byte("secret"))
	if strings.Contains(string(sealed), "secret") {
		t.Fatal("sealed value holds the plaintext")
	}
	got, err := both.Open(id, "privkey:a:1", sealed)
	if err != nil || string(got) != "secret" {
		t.Fatalf("open with the old key as second: %q, %v", got, err)
	}
	if _, err := both.Open(id, "privkey:b:1", sealed); !errors.Is(err, ErrSealBroken) || !Unreadable(err) {
		t.Errorf("a sealed value opened under another row's additional data: %v", err)
	}
	nid, nsealed := both.Seal("x", []byte("y"))
	if nid == id || nid != both.Primary() {
		t.Errorf("sealed under %s, want the primary %s", nid, both.Primary())
	}
	if _, err := old.Open(nid, "x", nsealed); !errors.Is(err, ErrUnknownKey) || !Unreadable(err) {
		t.Errorf("old keyring opened a value of the new key: %v", err)
	}
}
