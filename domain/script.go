package domain

import (
	"strings"
	"unicode"

	"golang.org/x/net/idna"
)

// IDNA accepts any mix of valid letters, so "pаypal.com" with a Cyrillic "а" is a
// valid IDN. Following the spirit of UTS #39's "highly restrictive" level (and what
// browsers do before they show a name in Unicode), a label may use one script, or
// Latin with the scripts that are written together in Chinese, Japanese or Korean.
// A label written only with Cyrillic letters that look like Latin ones ("аррӏе") is
// refused as a whole-script confusable.

// scriptTables are the scripts told apart; any letter outside them counts as "other".
var scriptTables = []struct {
	name  string
	table *unicode.RangeTable
}{
	{"Latin", unicode.Latin},
	{"Greek", unicode.Greek},
	{"Cyrillic", unicode.Cyrillic},
	{"Armenian", unicode.Armenian},
	{"Hebrew", unicode.Hebrew},
	{"Arabic", unicode.Arabic},
	{"Han", unicode.Han},
	{"Hiragana", unicode.Hiragana},
	{"Katakana", unicode.Katakana},
	{"Bopomofo", unicode.Bopomofo},
	{"Hangul", unicode.Hangul},
	{"Thai", unicode.Thai},
	{"Devanagari", unicode.Devanagari},
	{"Georgian", unicode.Georgian},
	{"Cherokee", unicode.Cherokee},
	{"Ethiopic", unicode.Ethiopic},
}

// allowedMixes are the multi-script combinations of UTS #39 §5.2 "highly restrictive".
var allowedMixes = []map[string]bool{
	{"Latin": true, "Han": true, "Hiragana": true, "Katakana": true},
	{"Latin": true, "Han": true, "Bopomofo": true},
	{"Latin": true, "Han": true, "Hangul": true},
}

// cyrillicLatinLookalikes are Cyrillic letters that render like Latin ones
// (Chromium's whole-script confusable list for Cyrillic).
const cyrillicLatinLookalikes = "асԁеһіјӏорԛѕԝхуъьҽпгѵѡ"

func scriptOf(r rune) string {
	if r < 0x80 {
		if r >= 'a' && r <= 'z' {
			return "Latin"
		}
		return "" // digits and hyphen are common to all scripts
	}
	if unicode.In(r, unicode.Common, unicode.Inherited) {
		return ""
	}
	for _, s := range scriptTables {
		if unicode.Is(s.table, r) {
			return s.name
		}
	}
	return "other"
}

// contextPunctuation are the punctuation marks IDNA2008 allows in context
// (RFC 5892 appendix A: Catalan middle dot, Greek keraia, Hebrew geresh and
// gershayim, katakana middle dot).
const contextPunctuation = "\u00b7\u0375\u05f3\u05f4\u30fb"

// unicodeReason checks each label of an ASCII (punycode) name in its Unicode form.
// UTS #46 lets through symbols that IDNA2008 disallows (emoji, U+2044 FRACTION
// SLASH, which imitates "/"); they are refused here, as are script mixes.
func unicodeReason(a string) string {
	u, err := idna.Punycode.ToUnicode(a)
	if err != nil {
		return ReasonIDNA
	}
	for label := range strings.SplitSeq(u, ".") {
		seen := map[string]bool{}
		for _, r := range label {
			if r >= 0x80 && (unicode.IsSymbol(r) || unicode.IsPunct(r)) &&
				!strings.ContainsRune(contextPunctuation, r) {
				return ReasonSymbol
			}
			if s := scriptOf(r); s != "" {
				seen[s] = true
			}
		}
		if len(seen) > 1 && !mixAllowed(seen) {
			return ReasonMixedScript
		}
		if len(seen) == 1 && seen["Cyrillic"] && allIn(label, cyrillicLatinLookalikes) {
			return ReasonConfusable
		}
	}
	return ""
}

func mixAllowed(seen map[string]bool) bool {
	for _, mix := range allowedMixes {
		ok := true
		for s := range seen {
			if !mix[s] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// allIn reports whether every letter of label is one of set (digits and hyphens pass).
func allIn(label, set string) bool {
	for _, r := range label {
		if r < 0x80 {
			continue
		}
		if !strings.ContainsRune(set, r) {
			return false
		}
	}
	return true
}
