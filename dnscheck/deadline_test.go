package dnscheck_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
)

// caaBlackHole is a DNS server that answers every A query with a CNAME to the
// target (and the target's address), AAAA with nothing, and never answers a
// CAA query: the slow part is the CAA walk up every label of the name.
func caaBlackHole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fqTarget := dns.Fqdn(target)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		if q.Qtype == dns.TypeCAA {
			return // read and dropped
		}
		m := new(dns.Msg)
		m.SetReply(r)
		if q.Qtype == dns.TypeA {
			if !strings.EqualFold(q.Name, fqTarget) {
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: fqTarget})
			}
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: fqTarget, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 10)})
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// A 31-label name whose CAA queries are never answered: with the per-query
// timeout alone the walk would take 31 × 5 s; the check's overall deadline
// (CUSTOM_DOMAIN_DNS_TIMEOUT) ends it, as a timeout the task retries.
func TestCheckDeadlineBoundsTheCAAWalk(t *testing.T) {
	t.Parallel()
	const deadline = time.Second
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{caaBlackHole(t)}, Target: target, CheckTimeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	n, err := domain.Parse(strings.Repeat("a.", 29) + "example.com")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Check(context.Background(), n)
	took := time.Since(start)
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || !te.Timeout || te.Type != "CAA" {
		t.Fatalf("Check = %v; want a CAA timeout", err)
	}
	// The per-query timeout is 5 s: ending within it proves the overall bound.
	if took > 4*time.Second {
		t.Errorf("check took %s with a %s deadline", took, deadline)
	}
	t.Logf("check ended after %s (deadline %s)", took, deadline)
}

// A DNS server that reads every query and never answers: the whole check
// ends at its deadline even with two such servers and a long per-query timeout.
func TestCheckDeadlineWithServersThatNeverAnswer(t *testing.T) {
	t.Parallel()
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{silentServer(t), silentServer(t)}, Target: target,
		Timeout: 30 * time.Second, CheckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := domain.Parse("shop.example.com")
	start := time.Now()
	_, err = c.Check(context.Background(), n)
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || !te.Timeout {
		t.Fatalf("Check = %v; want a timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("check took %s with a 500ms deadline and 30 s per query", took)
	}
}
