package domain_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/midsummer/certmgr/domain"
)

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		in   string
		want domain.Name
	}{
		{"plain", "shop.example.com", "shop.example.com"},
		{"upper case folded", "Shop.Example.COM", "shop.example.com"},
		{"trailing root dot dropped", "shop.example.com.", "shop.example.com"},
		{"two labels", "example.com", "example.com"},
		{"digits and hyphens", "a-1.b2.example", "a-1.b2.example"},
		{"umlaut to punycode", "bücher.de", "xn--bcher-kva.de"},
		{"punycode kept", "xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"upper-case punycode", "XN--BCHER-KVA.DE", "xn--bcher-kva.de"},
		{"sharp s non-transitional", "straße.de", "xn--strae-oqa.de"},
		{"cyrillic name and tld", "пример.рф", "xn--e1afmkfd.xn--p1ai"},
		{"japanese", "日本語.jp", "xn--wgv71a119e.jp"},
		{"fullwidth letters mapped", "ｅｘａｍｐｌｅ.com", "example.com"},
		{"ideographic full stops", "shop。example。com", "shop.example.com"},
		{"fullwidth stop as root dot", "ｆｏｏ．ｃｏｍ．", "foo.com"},
		{"ligature mapped", "ﬁle.example", "file.example"},
		{"decimal-looking label not last", "127.0.0.1.nip.io", "127.0.0.1.nip.io"},
		{"63-character label", strings.Repeat("a", 63) + ".com", domain.Name(strings.Repeat("a", 63) + ".com")},
		{"253-character name", long(253), domain.Name(long(253))},
		{"253 characters and the root dot", long(253) + ".", domain.Name(long(253))},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got, err := domain.Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// long returns a valid name of exactly n characters.
func long(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		l := min(63, n-b.Len())
		if rest := n - b.Len() - l; rest == 1 { // avoid a 0-length last label
			l--
		}
		b.WriteString(strings.Repeat("a", l))
	}
	return b.String()
}

func TestParseRejectsHostileNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		in     string
		reason string
	}{
		{"empty", "", domain.ReasonEmpty},
		{"root only", ".", domain.ReasonEmpty},
		{"semicolon (nginx directive end)", "a.com;include /etc/passwd", domain.ReasonCharacter},
		{"semicolon no space", "a.com;b", domain.ReasonCharacter},
		{"open brace", "a{.com", domain.ReasonCharacter},
		{"close brace", "a}.com", domain.ReasonCharacter},
		{"double quote", `a".com`, domain.ReasonCharacter},
		{"single quote", "a'.com", domain.ReasonCharacter},
		{"backtick", "a`id`.com", domain.ReasonCharacter},
		{"space inside", "shop example.com", domain.ReasonControl},
		{"leading space", " shop.example.com", domain.ReasonControl},
		{"tab", "shop.example.com\t", domain.ReasonControl},
		{"newline (log/config injection)", "shop.example.com\nserver_name evil.com", domain.ReasonControl},
		{"carriage return", "shop.example.com\r", domain.ReasonControl},
		{"NUL", "shop.example.com\x00.evil", domain.ReasonControl},
		{"DEL", "shop\x7f.example.com", domain.ReasonControl},
		{"C1 control", "shop\u0085.example.com", domain.ReasonControl},
		{"no-break space", "shop\u00a0.example.com", domain.ReasonControl},
		{"ideographic space", "shop\u3000.example.com", domain.ReasonControl},
		{"zero-width space", "sh\u200bop.example.com", domain.ReasonControl},
		{"soft hyphen", "sh\u00adop.example.com", domain.ReasonControl},
		{"bidi override", "shop\u202e.example.com", domain.ReasonControl},
		{"dollar (nginx variable)", "$host.example.com", domain.ReasonCharacter},
		{"slash (path traversal)", "../../etc/passwd", domain.ReasonCharacter},
		{"backslash", `a\b.com`, domain.ReasonCharacter},
		{"dot dot", "shop..example.com", domain.ReasonEmptyLabel},
		{"only dots", "..", domain.ReasonEmptyLabel},
		{"leading dot", ".example.com", domain.ReasonEmptyLabel},
		{"two trailing dots", "example.com..", domain.ReasonEmptyLabel},
		{"trailing dot then fullwidth stop", "example.com.．", domain.ReasonEmptyLabel},
		{"wildcard", "*.example.com", domain.ReasonWildcard},
		{"wildcard inside", "a.*.example.com", domain.ReasonWildcard},
		{"underscore", "_acme-challenge.example.com", domain.ReasonCharacter},
		{"at sign", "user@example.com", domain.ReasonCharacter},
		{"port", "example.com:443", domain.ReasonCharacter},
		{"percent-encoding", "ex%61mple.com", domain.ReasonCharacter},
		{"url", "https://example.com", domain.ReasonCharacter},
		{"dotted decimal", "127.0.0.1", domain.ReasonIPLiteral},
		{"dotted decimal root dot", "10.0.0.1.", domain.ReasonIPLiteral},
		{"octal", "0177.0.0.1", domain.ReasonIPLiteral},
		{"hex dotted", "0x7f.0x0.0x0.0x1", domain.ReasonIPLiteral},
		{"hex integer", "0x7f000001", domain.ReasonIPLiteral},
		{"decimal integer", "2130706433", domain.ReasonIPLiteral},
		{"short form", "127.1", domain.ReasonIPLiteral},
		{"fullwidth digits", "１２７.０.０.１", domain.ReasonIPLiteral},
		{"IPv6", "::1", domain.ReasonIPLiteral},
		{"IPv6 full", "2001:db8::1", domain.ReasonIPLiteral},
		{"IPv6 bracketed", "[::1]", domain.ReasonIPLiteral},
		{"IPv6 with zone", "fe80::1%eth0", domain.ReasonIPLiteral},
		{"IPv4-mapped IPv6", "::ffff:127.0.0.1", domain.ReasonIPLiteral},
		{"localhost", "localhost", domain.ReasonLocalhost},
		{"localhost upper", "LOCALHOST.", domain.ReasonLocalhost},
		{"under localhost", "shop.localhost", domain.ReasonLocalhost},
		{"mDNS .local", "printer.local", domain.ReasonReservedTLD},
		{"reverse zone", "1.0.0.127.in-addr.arpa", domain.ReasonReservedTLD},
		{"onion", "abc.onion", domain.ReasonReservedTLD},
		{"single label", "com", domain.ReasonSingleLabel},
		{"single label intranet", "intranet", domain.ReasonSingleLabel},
		{"overlong label", strings.Repeat("a", 64) + ".com", domain.ReasonLabelTooLong},
		{"overlong name", long(254), domain.ReasonTooLong},
		{"huge input", strings.Repeat("a.", 100000) + "com", domain.ReasonTooLong},
		{"label too long after punycode", strings.Repeat("ü", 60) + ".de", domain.ReasonLabelTooLong},
		{"leading hyphen", "-shop.example.com", domain.ReasonHyphen},
		{"trailing hyphen", "shop-.example.com", domain.ReasonHyphen},
		{"reserved hyphens", "ab--cd.example.com", domain.ReasonReservedHyphen},
		{"mixed Latin and Cyrillic", "pаypal.com", domain.ReasonMixedScript},
		{"mixed Latin and Greek", "gοogle.com", domain.ReasonMixedScript},
		{"mixed script in punycode", "xn--pypal-4ve.com", domain.ReasonMixedScript},
		{"whole-script Cyrillic confusable", "аррӏе.com", domain.ReasonConfusable},
		{"whole-script confusable as punycode", "xn--80ak6aa92e.com", domain.ReasonConfusable},
		{"bad punycode", "xn--a.com", domain.ReasonIDNA},
		{"punycode of plain ASCII", "xn--abc-.com", domain.ReasonHyphen},
		{"fraction slash imitating /", "a\u2044b.com", domain.ReasonSymbol},
		{"emoji", "💩.la", domain.ReasonSymbol},
		{"emoji as punycode", "xn--ls8h.la", domain.ReasonSymbol},
		{"unbalanced bracket", "[example.com", domain.ReasonCharacter},
		{"bidi rule broken", "a\u05d0.com", domain.ReasonIDNA},
		{"invalid UTF-8", "shop\xff.example.com", domain.ReasonCharacter},
		{"fullwidth semicolon maps to ;", "a；b.com", domain.ReasonIDNA},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d hostile names", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got, err := domain.Parse(tt.in)
			var rej *domain.RejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("Parse(%q) = %q, %v; want rejection %q", tt.in, got, err, tt.reason)
			}
			if rej.Reason != tt.reason {
				t.Errorf("Parse(%q) reason %q, want %q", tt.in, rej.Reason, tt.reason)
			}
			if rej.Input != tt.in {
				t.Errorf("Input %q, want %q", rej.Input, tt.in)
			}
			if got != "" {
				t.Errorf("rejected Parse returned name %q", got)
			}
		})
	}
}

func TestRejectedErrorIsSafeToLog(t *testing.T) {
	t.Parallel()
	_, err := domain.Parse("a.com\nlevel=error msg=forged" + strings.Repeat("x", 500))
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error message carries a raw newline: %q", msg)
	}
	if len(msg) > 300 {
		t.Errorf("error message is %d bytes; want the input truncated", len(msg))
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	p := domain.Policy{CNAMETarget: "custom.midsummer.cloud"}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := p.Zone(); got != "midsummer.cloud" {
		t.Errorf("Zone() = %q", got)
	}
	tests := []struct {
		desc   string
		in     string
		reason string // "" means accepted
	}{
		{"tenant domain", "shop.example.com", ""},
		{"same suffix, other zone", "notmidsummer.cloud", ""},
		{"zone as a label elsewhere", "midsummer.cloud.example.com", ""},
		{"the target", "custom.midsummer.cloud", domain.ReasonTarget},
		{"the target, other spelling", "CUSTOM.midsummer.cloud.", domain.ReasonTarget},
		{"the zone apex", "midsummer.cloud", domain.ReasonPlatformZone},
		{"a sibling in the zone", "app.midsummer.cloud", domain.ReasonPlatformZone},
		{"deep in the zone", "a.b.custom.midsummer.cloud", domain.ReasonPlatformZone},
		{"zone in fullwidth", "ａｐｐ.ｍｉｄｓｕｍｍｅｒ.ｃｌｏｕｄ", domain.ReasonPlatformZone},
		{"syntax still checked", "*.example.com", domain.ReasonWildcard},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			n, err := p.Parse(tt.in)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tt.in, err)
				}
				return
			}
			var rej *domain.RejectedError
			if !errors.As(err, &rej) || rej.Reason != tt.reason {
				t.Fatalf("Parse(%q) = %q, %v; want reason %q", tt.in, n, err, tt.reason)
			}
		})
	}
}

// TestPolicyReserved is the review's list: the registrable domain of a deep target
// and everything under it, the operator's reserved zones, and names under no public
// suffix (cluster-internal and corporate names) unless that suffix is allowed.
func TestPolicyReserved(t *testing.T) {
	t.Parallel()
	p := domain.Policy{
		CNAMETarget:          "custom.edge.midsummer.cloud",
		ReservedZones:        []string{"Midsummer.Dev.", "internal-corp.com"},
		AllowPrivateSuffixes: []string{"test"},
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := p.Zone(); got != "midsummer.cloud" {
		t.Errorf("Zone() = %q, want the registrable domain midsummer.cloud", got)
	}
	tests := []struct {
		desc   string
		in     string
		reason string // "" means accepted
	}{
		{"tenant domain", "shop.example.com", ""},
		{"tenant under a two-part public suffix", "shop.example.co.uk", ""},
		{"tenant under a private PSL entry", "shop.github.io", ""},
		{"allowed private suffix", "shop.tenant.test", ""},
		{"registrable domain of the target", "midsummer.cloud", domain.ReasonPlatformZone},
		{"sibling of the target's parent", "app.midsummer.cloud", domain.ReasonPlatformZone},
		{"the target's parent", "edge.midsummer.cloud", domain.ReasonPlatformZone},
		{"the target", "custom.edge.midsummer.cloud", domain.ReasonTarget},
		{"reserved zone apex", "midsummer.dev", domain.ReasonReservedZone},
		{"under a reserved zone", "api.midsummer.dev", domain.ReasonReservedZone},
		{"second reserved zone", "vpn.internal-corp.com", domain.ReasonReservedZone},
		{"reserved zone as a label elsewhere", "midsummer.dev.example.com", ""},
		{"cluster service", "kubernetes.default.svc", domain.ReasonPrivateSuffix},
		{"corporate name", "foo.corp", domain.ReasonPrivateSuffix},
		{"cluster domain", "db.ns.svc.cluster", domain.ReasonPrivateSuffix},
		{"a public suffix itself", "co.uk", domain.ReasonPublicSuffix},
		{"a private PSL entry itself", "github.io", domain.ReasonPublicSuffix},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			n, err := p.Parse(tt.in)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tt.in, err)
				}
				return
			}
			var rej *domain.RejectedError
			if !errors.As(err, &rej) || rej.Reason != tt.reason {
				t.Fatalf("Parse(%q) = %q, %v; want reason %q", tt.in, n, err, tt.reason)
			}
		})
	}
	// Without the allowance the test suffix is refused like any private one.
	strict := domain.Policy{CNAMETarget: "custom.midsummer.cloud"}
	if _, err := strict.Parse("shop.tenant.test"); err == nil {
		t.Error("a name under .test accepted without CUSTOM_DOMAIN_ALLOW_PRIVATE_SUFFIXES")
	}
	if (domain.Policy{ReservedZones: []string{"a..b"}}).Validate() == nil {
		t.Error("Validate accepted a malformed reserved zone")
	}
}

func TestPolicyTwoLabelTarget(t *testing.T) {
	t.Parallel()
	p := domain.Policy{CNAMETarget: "midsummer.cloud"}
	if _, err := p.Parse("x.midsummer.cloud"); err == nil {
		t.Error("name under a two-label target accepted")
	}
	if _, err := p.Parse("example.cloud"); err != nil {
		t.Errorf("sibling of a two-label target rejected: %v", err)
	}
}

func TestPolicyInvalidTarget(t *testing.T) {
	t.Parallel()
	p := domain.Policy{CNAMETarget: "*.midsummer.cloud"}
	if p.Validate() == nil {
		t.Fatal("Validate accepted a wildcard target")
	}
	if _, err := p.Parse("shop.example.com"); err == nil {
		t.Fatal("Parse under an invalid policy succeeded")
	}
}

var safe = regexp.MustCompile(`^[a-z0-9.-]+$`)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"shop.example.com", "Shop.Example.COM.", "bücher.de", "xn--bcher-kva.de",
		"*.example.com", "127.0.0.1", "0x7f.1", "[::1]", "a..b", "ｅｘａｍｐｌｅ.com",
		"a\x00b.com", "a b.com", "a;b.com", "пример.рф", "pаypal.com", "localhost",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := domain.Parse(raw)
		if err != nil {
			var rej *domain.RejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("Parse(%q) error is %T, not *RejectedError", raw, err)
			}
			if n != "" {
				t.Fatalf("Parse(%q) rejected but returned %q", raw, n)
			}
			return
		}
		s := string(n)
		if !safe.MatchString(s) {
			t.Fatalf("Parse(%q) = %q: character outside [a-z0-9.-]", raw, s)
		}
		if len(s) > 253 || strings.Contains(s, "..") || strings.HasPrefix(s, ".") ||
			strings.HasSuffix(s, ".") || !strings.Contains(s, ".") {
			t.Fatalf("Parse(%q) = %q: bad shape", raw, s)
		}
		for l := range strings.SplitSeq(s, ".") {
			if len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
				t.Fatalf("Parse(%q) = %q: bad label %q", raw, s, l)
			}
		}
		again, err := domain.Parse(s)
		if err != nil || again != n {
			t.Fatalf("Parse not idempotent: Parse(%q) = %q, then %q, %v", raw, n, again, err)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, in := range []string{"shop.example.com", "Bücher.Example.DE.", "*.example.com"} {
		b.Run(in, func(b *testing.B) {
			for b.Loop() {
				_, _ = domain.Parse(in)
			}
		})
	}
}
