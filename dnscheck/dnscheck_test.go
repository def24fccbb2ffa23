package dnscheck_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

const target = "custom.midsummer.test"

type bundle struct {
	dns     *testpeers.ChallTestSrvPeer
	checker *dnscheck.Checker
}

// setup starts a pebble-challtestsrv of the test's own whose target has one IPv4 and
// one IPv6 address.
func setup(t *testing.T) *bundle {
	t.Helper()
	srv := testpeers.ChallTestSrv(t)
	srv.AddA(t, target, "192.0.2.10")
	srv.AddAAAA(t, target, "2001:db8::10")
	return &bundle{dns: srv, checker: newChecker(t, srv.DNSAddr)}
}

func newChecker(t *testing.T, servers ...string) *dnscheck.Checker {
	t.Helper()
	c, err := dnscheck.New(dnscheck.Config{Servers: servers, Target: target, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func check(t *testing.T, c *dnscheck.Checker, name string) dnscheck.Result {
	t.Helper()
	n, err := domain.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Check(ctx, n)
	if err != nil {
		t.Fatalf("Check(%s): %v", name, err)
	}
	return r
}

func wantFail(t *testing.T, r dnscheck.Result, p dnscheck.Problem, detail string) {
	t.Helper()
	if r.OK || r.Problem != p {
		t.Errorf("Check(%s) = OK %v problem %q (%s); want problem %q", r.Name, r.OK, r.Problem, r.Detail, p)
	}
	if r.Detail != detail {
		t.Errorf("Detail\n got %q\nwant %q", r.Detail, detail)
	}
	var nv *dnscheck.NotVerifiedError
	if err := r.Err(); !errors.As(err, &nv) || err.Error() != detail {
		t.Errorf("Err() = %v; want NotVerifiedError with the detail", err)
	}
}

func TestCorrectCNAME(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dns.SetCNAME(t, "shop.example.com", target)
	r := check(t, b.checker, "shop.example.com")
	if !r.OK || r.Err() != nil {
		t.Fatalf("Check = %+v", r)
	}
	if want := []string{"shop.example.com", target}; !slices.Equal(r.Chain, want) {
		t.Errorf("Chain = %v, want %v", r.Chain, want)
	}
	if r.Detail != "shop.example.com points to "+target {
		t.Errorf("Detail = %q", r.Detail)
	}
}

func TestWrongCNAME(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dns.SetCNAME(t, "shop.example.com", "shops.myhost.net")
	b.dns.AddA(t, "shops.myhost.net", "198.51.100.7")
	wantFail(t, check(t, b.checker, "shop.example.com"), dnscheck.ProblemWrongCNAME,
		"shop.example.com is a CNAME to shops.myhost.net; point it to "+target)
}

func TestCNAMEChain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// challtestsrv follows one CNAME per answer, so the checker must ask again.
	b.dns.SetCNAME(t, "www.example.com", "a.cdn.example.net")
	b.dns.SetCNAME(t, "a.cdn.example.net", "b.cdn.example.net")
	b.dns.SetCNAME(t, "b.cdn.example.net", "c.cdn.example.net")
	b.dns.SetCNAME(t, "c.cdn.example.net", target)
	r := check(t, b.checker, "www.example.com")
	if !r.OK || len(r.Chain) != 5 || r.Chain[4] != target {
		t.Fatalf("Check = %+v", r)
	}

	b.dns.SetCNAME(t, "blog.example.com", "x.example.net")
	b.dns.SetCNAME(t, "x.example.net", "y.example.net")
	b.dns.SetCNAME(t, "y.example.net", "ghost.example.org")
	b.dns.AddA(t, "ghost.example.org", "203.0.113.5")
	wantFail(t, check(t, b.checker, "blog.example.com"), dnscheck.ProblemWrongCNAME,
		"blog.example.com is a CNAME to ghost.example.org (via x.example.net, y.example.net); point it to "+target)
}

func TestCNAMELoopAndLongChain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dns.SetCNAME(t, "loop.example.com", "l2.example.com")
	b.dns.SetCNAME(t, "l2.example.com", "loop.example.com")
	wantFail(t, check(t, b.checker, "loop.example.com"), dnscheck.ProblemCNAMELoop,
		"loop.example.com has a CNAME loop (loop.example.com → l2.example.com → loop.example.com); point it to "+target)

	names := []string{"long.example.com"}
	for i := range 12 {
		names = append(names, "h"+string(rune('a'+i))+".example.net")
	}
	for i := range len(names) - 1 {
		b.dns.SetCNAME(t, names[i], names[i+1])
	}
	b.dns.SetCNAME(t, names[len(names)-1], target)
	wantFail(t, check(t, b.checker, "long.example.com"), dnscheck.ProblemLongChain,
		"long.example.com has a chain of more than 8 CNAMEs; point it directly to "+target)
}

func TestApex(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dns.AddA(t, "example.org", "192.0.2.10")
	b.dns.AddAAAA(t, "example.org", "2001:db8::10")
	r := check(t, b.checker, "example.org")
	if !r.OK || len(r.Addresses) != 2 {
		t.Fatalf("apex with the target's addresses: %+v", r)
	}

	b.dns.AddA(t, "only4.example", "192.0.2.10")
	if r := check(t, b.checker, "only4.example"); !r.OK {
		t.Errorf("apex with only the target's IPv4: %+v", r)
	}

	b.dns.AddA(t, "mixed.example", "192.0.2.10", "203.0.113.9")
	wantFail(t, check(t, b.checker, "mixed.example"), dnscheck.ProblemWrongAddress,
		"mixed.example has addresses that are not ours (203.0.113.9); point it with a CNAME to "+target+
			", or for an apex domain use only these addresses: 192.0.2.10, 2001:db8::10")

	b.dns.AddA(t, "v6.example", "192.0.2.10")
	b.dns.AddAAAA(t, "v6.example", "2001:db8::99")
	if r := check(t, b.checker, "v6.example"); r.OK || r.Problem != dnscheck.ProblemWrongAddress {
		t.Errorf("apex with a foreign AAAA: %+v", r)
	}
}

func TestNoRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wantFail(t, check(t, b.checker, "empty.example.com"), dnscheck.ProblemNoRecords,
		"empty.example.com has no CNAME, A or AAAA record; add a CNAME record pointing it to "+target)
}

func TestCAA(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, host := range []string{"shop.forbid.example", "shop.allow.example", "shop.dns01.example"} {
		b.dns.SetCNAME(t, host, target)
	}
	// A CNAME owner has no CAA records of its own, so this one uses our address.
	b.dns.AddA(t, "shop.iodef.example", "192.0.2.10")
	b.dns.AddCAA(t, "forbid.example", testpeers.CAA{Tag: "issue", Value: "otherca.example"})
	b.dns.AddCAA(t, "allow.example", testpeers.CAA{Tag: "issue", Value: "otherca.example"},
		testpeers.CAA{Tag: "issue", Value: "letsencrypt.org; accounturi=https://acme/acct/1"})
	b.dns.AddCAA(t, "dns01.example", testpeers.CAA{Tag: "issue", Value: "letsencrypt.org; validationmethods=dns-01"})
	b.dns.AddCAA(t, "shop.iodef.example", testpeers.CAA{Tag: "iodef", Value: "mailto:sec@iodef.example"})
	// The record on the parent is shadowed by the name's own set (RFC 8659 §3).
	b.dns.AddCAA(t, "iodef.example", testpeers.CAA{Tag: "issue", Value: ";"})

	wantFail(t, check(t, b.checker, "shop.forbid.example"), dnscheck.ProblemCAA,
		`forbid.example has CAA records that do not allow Let's Encrypt; add the record: forbid.example. CAA 0 issue "letsencrypt.org"`)
	if r := check(t, b.checker, "shop.allow.example"); !r.OK || r.CAADomain != "allow.example" {
		t.Errorf("CAA naming letsencrypt.org: %+v", r)
	}
	if r := check(t, b.checker, "shop.dns01.example"); r.OK || r.Problem != dnscheck.ProblemCAA {
		t.Errorf("CAA allowing only dns-01: %+v", r)
	}
	if r := check(t, b.checker, "shop.iodef.example"); !r.OK || r.CAADomain != "shop.iodef.example" {
		t.Errorf("CAA with only iodef: %+v", r)
	}
}

func TestServfailIsTransient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dns.SetServfail(t, "broken.example.com")
	n, _ := domain.Parse("broken.example.com")
	_, err := b.checker.Check(context.Background(), n)
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || te.Timeout || te.Rcode != dns.RcodeServerFailure {
		t.Fatalf("SERVFAIL: err = %v", err)
	}
	if !strings.Contains(te.Detail(), "SERVFAIL") || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("SERVFAIL messages: %q / %q", te.Detail(), err)
	}
	var nv *dnscheck.NotVerifiedError
	if errors.As(err, &nv) {
		t.Error("SERVFAIL reported as the tenant's fault")
	}
}

// silentServer is a UDP socket that reads nothing and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func TestTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{silentServer(t)}, Target: target, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := domain.Parse("shop.example.com")
	start := time.Now()
	_, err = c.Check(context.Background(), n)
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || !te.Timeout {
		t.Fatalf("silent server: err = %v", err)
	}
	if !strings.Contains(te.Detail(), "did not answer in time") {
		t.Errorf("Detail = %q", te.Detail())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with a 300ms timeout", d)
	}
}

func TestNextServerAfterTimeout(t *testing.T) {
	t.Parallel()
	srv := testpeers.ChallTestSrv(t)
	srv.AddA(t, target, "192.0.2.10")
	srv.SetCNAME(t, "shop.example.com", target)
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{silentServer(t), srv.DNSAddr}, Target: target, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r := check(t, c, "shop.example.com"); !r.OK {
		t.Errorf("second server not used: %+v", r)
	}
}

// authServer is a small authoritative DNS server speaking the real protocol, for
// what pebble-challtestsrv cannot answer: NXDOMAIN (it answers NOERROR for every
// name). zone maps names to CNAME targets; other names do not exist.
func authServer(t *testing.T, cnames map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := q.Name
		for range 10 {
			tgt, ok := cnames[name]
			if !ok {
				break
			}
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: tgt})
			name = tgt
		}
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns: "ns.example.", Mbox: "hostmaster.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60}}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestNXDOMAIN(t *testing.T) {
	t.Parallel()
	addr := authServer(t, map[string]string{"shop.example.com.": "gone.example.net."})
	c := newChecker(t, addr)
	wantFail(t, check(t, c, "typo.example.com"), dnscheck.ProblemNXDOMAIN,
		"typo.example.com does not exist in DNS; add a CNAME record pointing it to "+target)
	wantFail(t, check(t, c, "shop.example.com"), dnscheck.ProblemDeadCNAME,
		"shop.example.com is a CNAME to gone.example.net, which does not exist; point it to "+target)
}

func TestParseServers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in string
		want     []string
		bad      string // the server named in the error
	}{
		{desc: "ports filled in, blanks dropped", in: " 10.0.0.1, [2001:db8::1]:5353,2001:db8::2,[2001:db8::3],127.0.0.1:5353,,",
			want: []string{"10.0.0.1:53", "[2001:db8::1]:5353", "[2001:db8::2]:53", "[2001:db8::3]:53", "127.0.0.1:5353"}},
		{desc: "nothing", in: " , ", want: nil},
		{desc: "a word", in: "foo", bad: "foo"},
		{desc: "a host name among addresses", in: "10.0.0.10:53,resolver.local", bad: "resolver.local"},
		{desc: "a host name with a port", in: "dns.example:53", bad: "dns.example:53"},
		{desc: "port out of range", in: "10.0.0.10:99999", bad: "10.0.0.10:99999"},
		{desc: "port zero", in: "10.0.0.10:0", bad: "10.0.0.10:0"},
		{desc: "named port", in: "10.0.0.10:dns", bad: "10.0.0.10:dns"},
		{desc: "no host", in: ":53", bad: ":53"},
	} {
		got, err := dnscheck.ParseServers(tc.in)
		switch {
		case tc.bad == "" && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("%s: ParseServers(%q) = %q, %v; want %q", tc.desc, tc.in, got, err, tc.want)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), strconv.Quote(tc.bad))):
			t.Errorf("%s: ParseServers(%q) = %q, %v; want an error naming %q", tc.desc, tc.in, got, err, tc.bad)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	// Config takes host:port as given, adding port 53 where it is left out.
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{" 10.0.0.1", "", "dns.example:53"}, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Servers(); !slices.Equal(got, []string{"10.0.0.1:53", "dns.example:53"}) {
		t.Errorf("servers = %v", got)
	}
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("search example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = dnscheck.New(dnscheck.Config{ResolvConf: rc, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Servers(); !slices.Equal(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) {
		t.Errorf("servers from resolv.conf = %v", got)
	}
	for _, cfg := range []dnscheck.Config{
		{Servers: []string{"127.0.0.1:53"}},
		{Servers: []string{"127.0.0.1:53"}, Target: "*.midsummer.test"},
		{Servers: []string{"127.0.0.1:dns"}, Target: target},
		{Servers: []string{":53"}, Target: target},
		{ResolvConf: filepath.Join(t.TempDir(), "missing"), Target: target},
	} {
		if _, err := dnscheck.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
