package dnscheck_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

const secret = "test-verify-secret-0123456789"

// The Python lines docs/django.md gives the tenant UI compute the same token
// as certmgr: Python is the oracle.
func TestTokenMatchesTheDjangoSnippet(t *testing.T) {
	t.Parallel()
	py := `import hashlib, hmac, sys
secret, owner, domain = sys.argv[1:4]
print(hmac.new(secret.encode(), f"{owner}:{domain}".encode(), hashlib.sha256).hexdigest())`
	for _, tc := range []struct{ owner, name string }{
		{"tenant-42", "shop.example.com"},
		{"event-7", "xn--bcher-kva.example.de"},
	} {
		out, err := exec.Command("/usr/bin/python3", "-c", py, secret, tc.owner, tc.name).Output()
		if err != nil {
			t.Fatalf("python3: %v", err)
		}
		if got, want := dnscheck.Token(secret, tc.owner, domain.Name(tc.name)), strings.TrimSpace(string(out)); got != want {
			t.Errorf("Token(%s, %s) = %s; Python computes %s", tc.owner, tc.name, got, want)
		}
	}
	if dnscheck.Token(secret, "tenant-5", "a.example.com") == dnscheck.Token(secret, "event-5", "a.example.com") {
		t.Error("tenant 5 and event 5 share a token")
	}
}

// CUSTOM_DOMAIN_OWNERSHIP=txt: pointing at the target is not enough; the TXT
// record _certmgr.<name> must hold the owner's token, and the detail says
// exactly which record to create. challtestsrv serves the TXT records.
func TestOwnershipTXT(t *testing.T) {
	t.Parallel()
	srv := testpeers.ChallTestSrv(t)
	srv.AddA(t, target, "192.0.2.10")
	name := domain.Name("shop.example.com")
	srv.SetCNAME(t, string(name), target)
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{srv.DNSAddr}, Target: target, Timeout: 2 * time.Second,
		Ownership: dnscheck.OwnershipTXT, VerifySecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mine := dnscheck.Token(secret, "tenant-1", name)
	check := func(owner string) dnscheck.Result {
		t.Helper()
		r, err := c.CheckOwner(ctx, name, owner)
		if err != nil {
			t.Fatalf("CheckOwner: %v", err)
		}
		return r
	}

	r := check("tenant-1")
	wantFail(t, r, dnscheck.ProblemNoTXT,
		"To prove that you own shop.example.com, create a TXT record _certmgr.shop.example.com with the value "+mine)

	srv.SetTXT(t, "_certmgr.shop.example.com", mine)
	if r := check("tenant-1"); !r.OK {
		t.Fatalf("with the owner's token: %+v", r)
	}
	// Another owner of the same name (tenant A left its record behind).
	other := dnscheck.Token(secret, "tenant-2", name)
	wantFail(t, check("tenant-2"), dnscheck.ProblemWrongTXT,
		"The TXT record _certmgr.shop.example.com does not hold this account's value; set it to "+other)

	// cname mode ignores the record.
	cn, err := dnscheck.New(dnscheck.Config{Servers: []string{srv.DNSAddr}, Target: target, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := cn.CheckOwner(ctx, name, "tenant-2"); err != nil || !r.OK {
		t.Fatalf("cname mode: %+v %v", r, err)
	}
	if _, err := dnscheck.New(dnscheck.Config{Servers: []string{srv.DNSAddr}, Target: target, Ownership: dnscheck.OwnershipTXT}); err == nil {
		t.Error("txt mode without a secret accepted")
	}
}
