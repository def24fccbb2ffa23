package dnscheck

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/midsummer/certmgr/domain"
)

// Ownership is how a tenant proves a name is theirs (CUSTOM_DOMAIN_OWNERSHIP).
type Ownership string

const (
	// OwnershipCNAME: the name points at the platform (CNAME, or the target's
	// addresses at an apex). A name whose previous owner left the CNAME behind
	// passes for whoever adds it next.
	OwnershipCNAME Ownership = "cname"
	// OwnershipTXT: as cname, plus a TXT record <label>.<name> holding the
	// owner's token (Token), which only the name's DNS holder can publish.
	OwnershipTXT Ownership = "txt"
)

// ParseOwnership reads CUSTOM_DOMAIN_OWNERSHIP; "" is cname.
func ParseOwnership(s string) (Ownership, error) {
	switch o := Ownership(strings.ToLower(strings.TrimSpace(s))); o {
	case "", OwnershipCNAME:
		return OwnershipCNAME, nil
	case OwnershipTXT:
		return o, nil
	}
	return "", fmt.Errorf("ownership %q is not cname or txt", s)
}

// Problems of the ownership record.
const (
	ProblemNoTXT    Problem = "no_ownership_txt"    // no TXT record at <label>.<name>
	ProblemWrongTXT Problem = "wrong_ownership_txt" // TXT records there, none with the owner's token
)

// Token is the value of the ownership TXT record of name for owner:
// hex(HMAC-SHA256(secret, owner + ":" + name)). owner is the row's owner id
// ("tenant-42" or "event-7", domaindb.CustomDomain.Owner). docs/django.md
// gives the same computation in Python for the tenant UI.
func Token(secret, owner string, name domain.Name) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(owner + ":" + string(name)))
	return hex.EncodeToString(m.Sum(nil))
}

// RecordName is where the ownership TXT record of name lives.
func (c *Checker) RecordName(name domain.Name) string {
	return c.cfg.TXTLabel + "." + string(name)
}

// CheckOwner is Check plus, in txt mode, the ownership record for owner; one
// CheckTimeout bounds both. In cname mode it is Check.
func (c *Checker) CheckOwner(ctx context.Context, name domain.Name, owner string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CheckTimeout)
	defer cancel()
	res, err := c.Check(ctx, name)
	if err != nil || !res.OK || c.cfg.Ownership != OwnershipTXT {
		return res, err
	}
	record := c.RecordName(name)
	want := Token(c.cfg.VerifySecret, owner, name)
	if len(record) > 253 {
		return fail(res, ProblemNoTXT, "%s is too long to hold the ownership record %s; use a shorter name", name, record), nil
	}
	msg, err := c.query(ctx, dns.Fqdn(record), dns.TypeTXT)
	if err != nil {
		return res, err
	}
	found := 0
	for _, rr := range msg.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok || !strings.EqualFold(txt.Hdr.Name, dns.Fqdn(record)) {
			continue
		}
		found++
		if hmac.Equal([]byte(strings.TrimSpace(strings.Join(txt.Txt, ""))), []byte(want)) {
			res.Detail += fmt.Sprintf(" and %s proves ownership", record)
			return res, nil
		}
	}
	if found == 0 {
		return fail(res, ProblemNoTXT, "To prove that you own %s, create a TXT record %s with the value %s",
			name, record, want), nil
	}
	return fail(res, ProblemWrongTXT, "The TXT record %s does not hold this account's value; set it to %s",
		record, want), nil
}
