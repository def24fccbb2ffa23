package dnscheck

import (
	"testing"

	"github.com/miekg/dns"
)

func TestCAAAllows(t *testing.T) {
	t.Parallel()
	caa := func(flag uint8, tag, value string) *dns.CAA { return &dns.CAA{Flag: flag, Tag: tag, Value: value} }
	tests := []struct {
		desc string
		set  []*dns.CAA
		want bool
	}{
		{"issue letsencrypt", []*dns.CAA{caa(0, "issue", "letsencrypt.org")}, true},
		{"case and spaces", []*dns.CAA{caa(0, "ISSUE", " LetsEncrypt.org ; accounturi=x")}, true},
		{"other CA only", []*dns.CAA{caa(0, "issue", "pki.goog")}, false},
		{"nobody may issue", []*dns.CAA{caa(0, "issue", ";")}, false},
		{"only issuewild", []*dns.CAA{caa(0, "issuewild", "pki.goog")}, true},
		{"only iodef", []*dns.CAA{caa(0, "iodef", "mailto:x@example.com")}, true},
		{"unknown critical tag", []*dns.CAA{caa(128, "tbs", "x"), caa(0, "issue", "letsencrypt.org")}, false},
		{"unknown non-critical tag", []*dns.CAA{caa(0, "tbs", "x"), caa(0, "issue", "letsencrypt.org")}, true},
		{"http-01 allowed", []*dns.CAA{caa(0, "issue", "letsencrypt.org; validationmethods=dns-01,http-01")}, true},
		{"dns-01 only", []*dns.CAA{caa(0, "issue", "letsencrypt.org; validationmethods=dns-01")}, false},
		{"lookalike issuer", []*dns.CAA{caa(0, "issue", "letsencrypt.org.evil")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			if got := caaAllows(tt.set, "letsencrypt.org"); got != tt.want {
				t.Errorf("caaAllows = %v, want %v", got, tt.want)
			}
		})
	}
}
