package domain

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Name is a validated, normalised domain name: lower-case ASCII labels of [a-z0-9-]
// (IDNs in punycode), at least two labels, no trailing dot. Only Parse and
// Policy.Parse should produce one; a conversion from an unchecked string defeats it.
type Name string

// String returns the name as text.
func (n Name) String() string { return string(n) }

// Limits from RFC 1035 §2.3.4 (presentation form, without the root dot).
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// Reasons a name is rejected. They are written for the tenant who typed the name and
// are stable, so callers and tests may compare RejectedError.Reason with them.
const (
	ReasonEmpty          = "the name is empty"
	ReasonTooLong        = "the name is longer than 253 characters"
	ReasonLabelTooLong   = "a part between dots is longer than 63 characters"
	ReasonEmptyLabel     = "the name has an empty part (two dots in a row, or a leading dot)"
	ReasonControl        = "the name contains a control character, space or invisible character"
	ReasonCharacter      = "the name contains a character other than letters, digits, hyphens and dots"
	ReasonHyphen         = "a part of the name starts or ends with a hyphen"
	ReasonReservedHyphen = "a part of the name has hyphens in its third and fourth places, which is reserved for internationalised names"
	ReasonWildcard       = "wildcard names are not supported; add each host name separately"
	ReasonIPLiteral      = "the name is an IP address; enter a host name such as shop.example.com"
	ReasonSingleLabel    = "the name needs at least two parts, such as shop.example.com"
	ReasonLocalhost      = "localhost names cannot get a public certificate"
	ReasonReservedTLD    = "the name is under a special-use top-level domain that cannot get a public certificate"
	ReasonIDNA           = "the name is not a valid internationalised domain name"
	ReasonSymbol         = "the name contains a symbol, emoji or punctuation mark"
	ReasonMixedScript    = "a part of the name mixes alphabets (for example Latin and Cyrillic letters)"
	ReasonConfusable     = "a part of the name is spelled with letters that imitate Latin letters"
	ReasonPlatformZone   = "the name is inside the platform's own domain"
	ReasonTarget         = "the name is the platform's CNAME target itself"
	ReasonReservedZone   = "the name is inside a domain the platform reserves"
	ReasonPrivateSuffix  = "the name does not end in a public top-level domain, so no public certificate authority can issue for it"
	ReasonPublicSuffix   = "the name is a public suffix (like co.uk) that nobody can own; enter a host name under it"
)

// RejectedError says why a name was refused. Input is the raw input as given (it may
// hold anything: quote it when printing); Reason is one of the Reason constants.
type RejectedError struct {
	Input  string
	Reason string
}

// Error quotes and truncates the input so that a hostile name cannot forge log lines.
func (e *RejectedError) Error() string {
	in := e.Input
	if len(in) > 80 {
		in = in[:80] + "..."
	}
	return fmt.Sprintf("domain %q rejected: %s", in, e.Reason)
}

func reject(raw, reason string) (Name, error) {
	return "", &RejectedError{Input: raw, Reason: reason}
}

// profile is UTS #46 lookup processing (non-transitional, so ß stays ß), with the
// STD3 ASCII rules, hyphen and joiner checks, validation of existing xn-- labels and
// the Bidi rule. Lengths are checked by Parse itself to give precise reasons.
var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.CheckHyphens(true),
	idna.CheckJoiners(true),
)

// reservedTLDs are special-use top-level names (RFC 6761, RFC 6762, RFC 7686, RFC 8375,
// ICANN's .internal) for which no public CA issues a certificate.
var reservedTLDs = map[string]bool{
	"local":    true,
	"invalid":  true,
	"internal": true,
	"arpa":     true,
	"onion":    true,
	"alt":      true,
}

// Parse normalises raw into a Name or says why it cannot be one. It needs no
// configuration; Policy.Parse adds the platform's own rules.
func Parse(raw string) (Name, error) {
	if raw == "" {
		return reject(raw, ReasonEmpty)
	}
	if len(raw) > 4*maxNameLen {
		// Longer than any name whose punycode could fit; don't spend IDNA on it.
		return reject(raw, ReasonTooLong)
	}
	if !utf8.ValidString(raw) {
		return reject(raw, ReasonCharacter)
	}
	if isIPLiteral(raw) {
		return reject(raw, ReasonIPLiteral)
	}
	if r := checkRunes(raw); r != "" {
		return reject(raw, r)
	}
	a, err := profile.ToASCII(raw)
	if err != nil {
		// Name the more helpful reason when the ASCII shape alone explains it.
		if isASCII(raw) {
			if r := shapeReason(strings.TrimSuffix(asciiLower(raw), ".")); r != "" {
				return reject(raw, r)
			}
		}
		return reject(raw, ReasonIDNA)
	}
	// One trailing dot (the root) is dropped, after mapping, as a fullwidth or
	// ideographic full stop maps to a dot. Any other empty label is refused below.
	a = strings.TrimSuffix(asciiLower(a), ".")
	if a == "" {
		return reject(raw, ReasonEmpty)
	}
	if r := shapeReason(a); r != "" {
		return reject(raw, r)
	}
	if isIPLiteral(a) {
		return reject(raw, ReasonIPLiteral)
	}
	labels := strings.Split(a, ".")
	tld := labels[len(labels)-1]
	if tld == "localhost" {
		return reject(raw, ReasonLocalhost)
	}
	if endsInNumber(tld) {
		return reject(raw, ReasonIPLiteral)
	}
	if len(labels) < 2 {
		return reject(raw, ReasonSingleLabel)
	}
	if reservedTLDs[tld] || strings.HasSuffix(a, ".home.arpa") {
		return reject(raw, ReasonReservedTLD)
	}
	if strings.Contains(a, "xn--") {
		if r := unicodeReason(a); r != "" {
			return reject(raw, r)
		}
	}
	return Name(a), nil
}

// checkRunes rejects characters that have no business in a host name whatever IDNA
// would make of them: controls (NUL, newline, DEL, C1), spaces of any kind, invisible
// format characters (zero-width joiners, bidi overrides, soft hyphen), wildcards and
// the ASCII punctuation that would break out of a config file, path or log line.
func checkRunes(s string) string {
	for _, r := range s {
		switch {
		case r == '*':
			return ReasonWildcard
		case r < utf8.RuneSelf:
			if r <= ' ' || r == 0x7f {
				return ReasonControl
			}
			if !isLDH(byte(r)) && r != '.' && !(r >= 'A' && r <= 'Z') {
				if r == ':' || r == '[' || r == ']' {
					continue // judged by isIPLiteral, else by the shape check
				}
				return ReasonCharacter
			}
		case unicode.IsControl(r), unicode.IsSpace(r), unicode.Is(unicode.Cf, r),
			unicode.Is(unicode.Zs, r), r == utf8.RuneError:
			return ReasonControl
		}
	}
	return ""
}

// shapeReason checks an ASCII name (no trailing dot) label by label.
func shapeReason(a string) string {
	if len(a) > maxNameLen {
		return ReasonTooLong
	}
	start := 0
	for i := 0; i <= len(a); i++ {
		if i < len(a) && a[i] != '.' {
			c := a[i]
			if c == '*' {
				return ReasonWildcard
			}
			if !isLDH(c) {
				return ReasonCharacter
			}
			continue
		}
		label := a[start:i]
		switch {
		case label == "":
			return ReasonEmptyLabel
		case len(label) > maxLabelLen:
			return ReasonLabelTooLong
		case label[0] == '-' || label[len(label)-1] == '-':
			return ReasonHyphen
		case len(label) >= 4 && label[2:4] == "--" && !strings.HasPrefix(label, "xn--"):
			return ReasonReservedHyphen
		}
		start = i + 1
	}
	return ""
}

func isLDH(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// isIPLiteral reports an IPv4 or IPv6 address, bracketed or not, with or without a
// zone or trailing dot. Other IPv4 spellings (octal, hex, integer, short forms) are
// caught by endsInNumber, as a browser's URL parser would read them as addresses.
func isIPLiteral(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if b, ok := strings.CutPrefix(s, "["); ok {
		s, _ = strings.CutSuffix(b, "]")
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// endsInNumber is the WHATWG URL "ends in a number" test on the last label: decimal
// digits, or 0x followed by hex digits. "0x7f.1", "0177.0.0.1", "2130706433" and
// "127.1" all end in a number and resolve as IPv4 in browsers and in inet_aton.
func endsInNumber(label string) bool {
	if label == "" {
		return false
	}
	if h, ok := strings.CutPrefix(label, "0x"); ok {
		for i := 0; i < len(h); i++ {
			c := h[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}
