package acme

import (
	"fmt"
	"strings"

	"github.com/go-acme/lego/v5/certcrypto"
)

// KeyType is the private key algorithm of a certificate (ACME_KEY_TYPE).
type KeyType string

// The key types certmgr issues with.
const (
	EC256   KeyType = "ec256"
	EC384   KeyType = "ec384"
	RSA2048 KeyType = "rsa2048"
	RSA3072 KeyType = "rsa3072"
	RSA4096 KeyType = "rsa4096"
)

// DefaultKeyType is used when ACME_KEY_TYPE is empty.
const DefaultKeyType = EC256

// KeyTypes lists every supported key type, default first.
func KeyTypes() []KeyType { return []KeyType{EC256, EC384, RSA2048, RSA3072, RSA4096} }

// ParseKeyType reads an ACME_KEY_TYPE value; case and surrounding space are ignored.
func ParseKeyType(s string) (KeyType, error) {
	k := KeyType(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range KeyTypes() {
		if k == known {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown key type %q (want one of ec256, ec384, rsa2048, rsa3072, rsa4096)", s)
}

func (k KeyType) String() string { return string(k) }

// lego maps the key type onto lego's constant.
func (k KeyType) lego() certcrypto.KeyType {
	switch k {
	case EC384:
		return certcrypto.EC384
	case RSA2048:
		return certcrypto.RSA2048
	case RSA3072:
		return certcrypto.RSA3072
	case RSA4096:
		return certcrypto.RSA4096
	default:
		return certcrypto.EC256
	}
}

// certbotParams are the [renewalparams] entries certbot writes for this key type.
func (k KeyType) certbotParams() [][2]string {
	switch k {
	case EC256:
		return [][2]string{{"key_type", "ecdsa"}, {"elliptic_curve", "secp256r1"}}
	case EC384:
		return [][2]string{{"key_type", "ecdsa"}, {"elliptic_curve", "secp384r1"}}
	case RSA2048:
		return [][2]string{{"key_type", "rsa"}, {"rsa_key_size", "2048"}}
	case RSA3072:
		return [][2]string{{"key_type", "rsa"}, {"rsa_key_size", "3072"}}
	default:
		return [][2]string{{"key_type", "rsa"}, {"rsa_key_size", "4096"}}
	}
}

// keyTypeOf names the key type of a certificate's public key, or "" when it is
// none of the supported ones.
func keyTypeOf(pub any) KeyType {
	kt, err := certcrypto.GetKeyType(pub)
	if err != nil {
		return ""
	}
	switch kt {
	case certcrypto.EC256:
		return EC256
	case certcrypto.EC384:
		return EC384
	case certcrypto.RSA2048:
		return RSA2048
	case certcrypto.RSA3072:
		return RSA3072
	case certcrypto.RSA4096:
		return RSA4096
	}
	return ""
}
