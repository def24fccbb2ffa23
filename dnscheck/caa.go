package dnscheck

import (
	"context"
	"strings"

	"github.com/miekg/dns"
)

// checkCAA finds the relevant CAA record set (RFC 8659 §3: the first non-empty set
// found querying the name, then each parent up to the top-level domain, CNAMEs
// followed by the resolver) and reports its owner and whether it lets the CA issue
// a certificate for a non-wildcard name validated over HTTP-01.
func (c *Checker) checkCAA(ctx context.Context, fq string) (owner string, allowed bool, err error) {
	labels := dns.SplitDomainName(fq)
	for i := range labels {
		name := dns.Fqdn(strings.Join(labels[i:], "."))
		msg, err := c.query(ctx, name, dns.TypeCAA)
		if err != nil {
			return "", false, err
		}
		var set []*dns.CAA
		for _, rr := range msg.Answer {
			if caa, ok := rr.(*dns.CAA); ok {
				set = append(set, caa)
			}
		}
		if len(set) > 0 {
			return strings.TrimSuffix(name, "."), caaAllows(set, c.cfg.CAIdentifier), nil
		}
	}
	return "", true, nil
}

// caaAllows applies RFC 8659 §4 to one record set for a non-wildcard name.
func caaAllows(set []*dns.CAA, ca string) bool {
	var issue []*dns.CAA
	for _, r := range set {
		tag := strings.ToLower(r.Tag)
		switch tag {
		case "issue":
			issue = append(issue, r)
		case "issuewild", "iodef", "contactemail", "contactphone", "issuemail", "issuevmc":
		default:
			if r.Flag&128 != 0 {
				return false // an unknown critical property forbids issuance
			}
		}
	}
	if len(issue) == 0 {
		return true // no issue property: any CA may issue
	}
	for _, r := range issue {
		domainPart, params, _ := strings.Cut(r.Value, ";")
		if !strings.EqualFold(strings.TrimSpace(domainPart), ca) {
			continue
		}
		if methodsAllowHTTP01(params) {
			return true
		}
	}
	return false
}

// methodsAllowHTTP01 reads Let's Encrypt's validationmethods parameter (RFC 8657);
// without one, every method is allowed.
func methodsAllowHTTP01(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "validationmethods") {
			continue
		}
		for m := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(m) == "http-01" {
				return true
			}
		}
		return false
	}
	return true
}
