package certstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyError is a CERTMGR_STORE_KEY that is missing, malformed, or does not
// open what the store holds. certmgr exits 2 on it.
type KeyError struct{ Reason string }

func (e *KeyError) Error() string { return "CERTMGR_STORE_KEY: " + e.Reason }

// Keyring holds the keys private keys are sealed with: the first seals, every
// one opens (a second key is the old one during a rotation).
type Keyring struct {
	keys []storeKey
}

type storeKey struct {
	id   string // hex of the first 8 bytes of SHA-256("certmgr-store-key" || key)
	aead cipher.AEAD
}

// ParseKeyring reads CERTMGR_STORE_KEY: one or two comma-separated base64
// encodings of 32 random bytes (standard or URL alphabet, padded or not).
func ParseKeyring(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, &KeyError{Reason: "not set; the postgres store needs 32 random bytes in base64 (head -c 32 /dev/urandom | base64)"}
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, &KeyError{Reason: fmt.Sprintf("%d keys given; at most two (new,old) during a rotation", len(parts))}
	}
	k := &Keyring{}
	for i, p := range parts {
		raw, err := decodeKey(strings.TrimSpace(p))
		if err != nil {
			return nil, &KeyError{Reason: fmt.Sprintf("key %d: %v", i+1, err)}
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, &KeyError{Reason: fmt.Sprintf("key %d: %v", i+1, err)}
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, &KeyError{Reason: fmt.Sprintf("key %d: %v", i+1, err)}
		}
		sum := sha256.Sum256(append([]byte("certmgr-store-key"), raw...))
		id := hex.EncodeToString(sum[:8])
		for _, prev := range k.keys {
			if prev.id == id {
				return nil, &KeyError{Reason: "the same key is given twice"}
			}
		}
		k.keys = append(k.keys, storeKey{id: id, aead: aead})
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Primary is the id of the key that seals.
func (k *Keyring) Primary() string { return k.keys[0].id }

// IDs are the ids of every key, the primary first.
func (k *Keyring) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.id
	}
	return ids
}

// Seal encrypts plaintext under the primary key, bound to aad. The result is
// the nonce followed by the ciphertext; keyID says which key sealed it.
func (k *Keyring) Seal(aad string, plaintext []byte) (keyID string, sealed []byte) {
	key := k.keys[0]
	nonce := make([]byte, key.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return key.id, key.aead.Seal(nonce, nonce, plaintext, []byte(aad))
}

// ErrUnknownKey is returned by Open for a value sealed by a key the keyring
// does not hold.
var ErrUnknownKey = errors.New("sealed by a key CERTMGR_STORE_KEY does not hold")

// ErrSealBroken is returned by Open for a value that does not open under
// the key it names: altered, truncated, or bound to another row.
var ErrSealBroken = errors.New("sealed value does not open")

// Unreadable reports whether err is a sealed value that no retry will open
// (ErrUnknownKey, ErrSealBroken), as opposed to a failure to read it.
func Unreadable(err error) bool {
	return errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrSealBroken)
}

// Open decrypts what Seal returned.
func (k *Keyring) Open(keyID, aad string, sealed []byte) ([]byte, error) {
	for _, key := range k.keys {
		if key.id != keyID {
			continue
		}
		n := key.aead.NonceSize()
		if len(sealed) < n {
			return nil, fmt.Errorf("open sealed value %s: too short: %w", aad, ErrSealBroken)
		}
		out, err := key.aead.Open(nil, sealed[:n], sealed[n:], []byte(aad))
		if err != nil {
			return nil, fmt.Errorf("open sealed value %s: %w: %w", aad, ErrSealBroken, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("open sealed value %s (key %s): %w", aad, keyID, ErrUnknownKey)
}
