package testpeers

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// RandomHex is n random bytes in hex: the suffix of names a test makes its
// own (schemas, vhosts, domains, pods), so that parallel tests and test
// processes sharing a peer do not meet.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b)
}

// StoreKey is a new certstore sealing key as CERTMGR_STORE_KEY takes it: 32
// random bytes in standard base64.
func StoreKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
