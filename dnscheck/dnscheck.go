package dnscheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/domain"
)

// Config configures a Checker.
type Config struct {
	// Servers are the resolvers asked, in order, as host:port (port 53 when
	// left out) (CUSTOM_DOMAIN_DNS_SERVERS). Default: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty. Default /etc/resolv.conf.
	ResolvConf string
	// Target is the host name tenants point their CNAME at
	// (CUSTOM_DOMAIN_CNAME_TARGET). Required.
	Target string
	// Timeout bounds each query to each server. Default 5s.
	Timeout time.Duration
	// CheckTimeout bounds one whole Check: the CNAME chain, the addresses and
	// the CAA walk up every label, over every server (CUSTOM_DOMAIN_DNS_TIMEOUT).
	// A check past it fails as a timeout (*TransientError). Default 10s.
	CheckTimeout time.Duration
	// Ownership is what a check requires besides pointing at Target
	// (CUSTOM_DOMAIN_OWNERSHIP). Default cname.
	Ownership Ownership
	// VerifySecret keys the ownership tokens (CUSTOM_DOMAIN_VERIFY_SECRET).
	// Required in txt mode, at least 16 bytes.
	VerifySecret string
	// TXTLabel is the label of the ownership record, prepended to the name
	// (CUSTOM_DOMAIN_TXT_LABEL). Default "_certmgr".
	TXTLabel string
	// MaxCNAMEHops bounds the CNAME chain followed. Default 8.
	MaxCNAMEHops int
	// CAIdentifier is the issuer domain a CAA "issue" record must name for the
	// order to be allowed. Default "letsencrypt.org".
	CAIdentifier string
	// Logger receives debug lines about queries. Default: disabled.
	Logger zerolog.Logger
}

func (c Config) withDefaults() (Config, error) {
	c.ResolvConf = cmp.Or(c.ResolvConf, "/etc/resolv.conf")
	c.Timeout = cmp.Or(c.Timeout, 5*time.Second)
	c.CheckTimeout = cmp.Or(c.CheckTimeout, 10*time.Second)
	c.Ownership = cmp.Or(c.Ownership, OwnershipCNAME)
	c.TXTLabel = cmp.Or(c.TXTLabel, "_certmgr")
	c.MaxCNAMEHops = cmp.Or(c.MaxCNAMEHops, 8)
	c.CAIdentifier = cmp.Or(c.CAIdentifier, "letsencrypt.org")
	c.Servers = withPorts(c.Servers)
	if len(c.Servers) == 0 {
		rc, err := dns.ClientConfigFromFile(c.ResolvConf)
		if err != nil {
			return c, fmt.Errorf("dnscheck: no CUSTOM_DOMAIN_DNS_SERVERS and cannot read %s: %w", c.ResolvConf, err)
		}
		for _, s := range rc.Servers {
			c.Servers = append(c.Servers, net.JoinHostPort(s, rc.Port))
		}
	}
	return c, nil
}

func (c Config) validate() error {
	if c.Target == "" {
		return errors.New("dnscheck: Target (CUSTOM_DOMAIN_CNAME_TARGET) is required")
	}
	if _, err := domain.Parse(c.Target); err != nil {
		return fmt.Errorf("dnscheck: Target (CUSTOM_DOMAIN_CNAME_TARGET): %w", err)
	}
	if len(c.Servers) == 0 {
		return errors.New("dnscheck: no DNS servers (CUSTOM_DOMAIN_DNS_SERVERS or resolv.conf)")
	}
	for _, s := range c.Servers {
		host, port, err := net.SplitHostPort(s)
		if err == nil && host == "" {
			err = errors.New("no host")
		}
		if _, perr := strconv.ParseUint(port, 10, 16); err == nil && perr != nil {
			err = errors.New("bad port")
		}
		if err != nil {
			return fmt.Errorf("dnscheck: DNS server %q (CUSTOM_DOMAIN_DNS_SERVERS) is not host:port: %w", s, err)
		}
	}
	if _, err := ParseOwnership(string(c.Ownership)); err != nil {
		return fmt.Errorf("dnscheck: Ownership (CUSTOM_DOMAIN_OWNERSHIP): %w", err)
	}
	if c.Ownership == OwnershipTXT && len(c.VerifySecret) < 16 {
		return errors.New("dnscheck: VerifySecret (CUSTOM_DOMAIN_VERIFY_SECRET) of at least 16 bytes is required with CUSTOM_DOMAIN_OWNERSHIP=txt")
	}
	if l := c.TXTLabel; len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" || strings.HasPrefix(l, "-") {
		return fmt.Errorf("dnscheck: TXTLabel (CUSTOM_DOMAIN_TXT_LABEL) %q is not one DNS label", l)
	}
	if c.Timeout < 0 || c.CheckTimeout < 0 || c.MaxCNAMEHops < 1 {
		return fmt.Errorf("dnscheck: Timeout %s and MaxCNAMEHops %d must be positive", c.Timeout, c.MaxCNAMEHops)
	}
	return nil
}

// ParseServers parses CUSTOM_DOMAIN_DNS_SERVERS: comma-separated resolver IP
// addresses, each optionally with :port (53 when left out). A host name is
// refused: it would need a resolver to find the resolver, and a typo such as
// "foo" must not pass as one.
func ParseServers(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		hp := withPort(f)
		host, port, err := net.SplitHostPort(hp)
		n, perr := strconv.Atoi(port)
		if err != nil || net.ParseIP(host) == nil || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("comma-separated resolver IP addresses, each optionally with :port (e.g. 10.96.0.10:53); %q is not one", f)
		}
		out = append(out, hp)
	}
	return out, nil
}

// withPorts trims servers, drops empty ones and gives the others without a
// port port 53.
func withPorts(servers []string) []string {
	var out []string
	for _, s := range servers {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, withPort(s))
		}
	}
	return out
}

// withPort is host:port, host:53 when s has no port.
func withPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return net.JoinHostPort(strings.Trim(s, "[]"), "53")
	}
	return s
}

// Checker runs DNS checks. It is safe for concurrent use.
type Checker struct {
	cfg    Config
	target string // FQDN, lower case
	client *dns.Client
	log    zerolog.Logger
}

// New returns a Checker; it reads resolv.conf when no servers are configured.
func New(cfg Config) (*Checker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t, _ := domain.Parse(cfg.Target)
	return &Checker{
		cfg:    cfg,
		target: dns.Fqdn(string(t)),
		client: &dns.Client{Net: "udp", Timeout: cfg.Timeout},
		log:    cfg.Logger.With().Str("component", "dnscheck").Logger(),
	}, nil
}

// Problem classifies a failed check, for callers that branch; Detail says it in words.
type Problem string

// Problems a tenant can fix.
const (
	ProblemNone         Problem = ""
	ProblemNXDOMAIN     Problem = "nxdomain"      // the name does not exist
	ProblemNoRecords    Problem = "no_records"    // exists, but no CNAME, A or AAAA
	ProblemWrongCNAME   Problem = "wrong_cname"   // the CNAME chain ends elsewhere
	ProblemDeadCNAME    Problem = "dead_cname"    // the chain ends at a name that does not exist
	ProblemCNAMELoop    Problem = "cname_loop"    // the chain loops
	ProblemLongChain    Problem = "long_chain"    // more than MaxCNAMEHops links
	ProblemWrongAddress Problem = "wrong_address" // A/AAAA not all the target's
	ProblemCAA          Problem = "caa_forbids"   // CAA forbids the CA
)

// Result is the outcome of a check the DNS answered.
type Result struct {
	Name domain.Name
	// OK: the name points at the target and CAA allows the CA.
	OK bool
	// Detail is short and written for the tenant (it goes to last_error), e.g.
	// "shop.example.com is a CNAME to shops.myhost.net; point it to custom.midsummer.cloud".
	Detail  string
	Problem Problem
	// Chain is the CNAME chain followed, starting with Name (without trailing dots).
	Chain []string
	// Addresses are the name's own A/AAAA records when it has no CNAME.
	Addresses []netip.Addr
	// CAADomain is the name whose CAA records applied ("" when none exist).
	CAADomain string
}

// Err is nil for an OK result and a *NotVerifiedError otherwise.
func (r Result) Err() error {
	if r.OK {
		return nil
	}
	return &NotVerifiedError{Result: r}
}

// NotVerifiedError is a check the tenant must act on: retrying will not help until
// their DNS changes. Its message is the tenant-facing Detail.
type NotVerifiedError struct{ Result Result }

func (e *NotVerifiedError) Error() string { return e.Result.Detail }

// TransientError is DNS failing to answer: SERVFAIL, REFUSED, a timeout or an
// unreachable server. Retry later.
type TransientError struct {
	Name    string // the name queried
	Type    string // A, AAAA, CAA
	Server  string
	Rcode   int  // dns.RcodeServerFailure etc.; -1 for a network failure
	Timeout bool // no answer in time
	Err     error
}

func (e *TransientError) Error() string {
	what := fmt.Sprintf("DNS lookup of %s %s at %s", strings.TrimSuffix(e.Name, "."), e.Type, e.Server)
	switch {
	case e.Timeout:
		return what + ": no answer in time"
	case e.Rcode >= 0:
		return fmt.Sprintf("%s: server answered %s", what, dns.RcodeToString[e.Rcode])
	}
	return fmt.Sprintf("%s: %v", what, e.Err)
}

func (e *TransientError) Unwrap() error { return e.Err }

// Detail is a tenant-facing sentence for last_error while the check is retried.
func (e *TransientError) Detail() string { return e.Problem() + "; we will try again" }

// Problem is Detail without the promise to try again (for when no attempt
// is left).
func (e *TransientError) Problem() string {
	name := strings.TrimSuffix(e.Name, ".")
	switch {
	case e.Timeout:
		return fmt.Sprintf("DNS servers for %s did not answer in time", name)
	case e.Rcode == dns.RcodeServerFailure:
		return fmt.Sprintf("DNS servers for %s answered with a server failure (SERVFAIL); check the domain's DNS hosting and DNSSEC", name)
	}
	return fmt.Sprintf("DNS lookup of %s failed", name)
}

// Check verifies that name points at the target and that CAA allows the CA.
// The whole check, CAA walk included, ends within CheckTimeout: one tenant's
// long or slow name cannot hold a worker for minutes.
func (c *Checker) Check(ctx context.Context, name domain.Name) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CheckTimeout)
	defer cancel()
	res := Result{Name: name}
	fq := dns.Fqdn(string(name))
	ch, err := c.follow(ctx, fq, dns.TypeA)
	if err != nil {
		return res, err
	}
	for _, n := range ch.chain {
		res.Chain = append(res.Chain, display(n))
	}
	target := display(c.target)
	switch {
	case ch.reached:
		// Pointing at us through a CNAME.
	case ch.loop:
		return fail(res, ProblemCNAMELoop, "%s has a CNAME loop (%s); point it to %s",
			name, strings.Join(res.Chain, " → "), target), nil
	case ch.tooLong:
		return fail(res, ProblemLongChain, "%s has a chain of more than %d CNAMEs; point it directly to %s",
			name, c.cfg.MaxCNAMEHops, target), nil
	case len(ch.chain) > 1 && ch.nxdomain:
		return fail(res, ProblemDeadCNAME, "%s is a CNAME to %s, which does not exist; point it to %s",
			name, via(res.Chain), target), nil
	case len(ch.chain) > 1:
		return fail(res, ProblemWrongCNAME, "%s is a CNAME to %s; point it to %s",
			name, via(res.Chain), target), nil
	case ch.nxdomain:
		return fail(res, ProblemNXDOMAIN, "%s does not exist in DNS; add a CNAME record pointing it to %s",
			name, target), nil
	default:
		// No CNAME: an apex name, or one with its own addresses.
		r, err := c.checkAddresses(ctx, res, fq, ch.addrs)
		if err != nil || !r.OK {
			return r, err
		}
		res = r
	}

	caaOwner, allowed, err := c.checkCAA(ctx, fq)
	if err != nil {
		return res, err
	}
	res.CAADomain = caaOwner
	if !allowed {
		return fail(res, ProblemCAA, "%s has CAA records that do not allow Let's Encrypt; add the record: %s. CAA 0 issue \"%s\"",
			caaOwner, caaOwner, c.cfg.CAIdentifier), nil
	}
	res.OK = true
	if ch.reached {
		res.Detail = fmt.Sprintf("%s points to %s", name, target)
	} else {
		res.Detail = fmt.Sprintf("%s has the addresses of %s", name, target)
	}
	return res, nil
}

func fail(r Result, p Problem, format string, args ...any) Result {
	r.OK, r.Problem, r.Detail = false, p, fmt.Sprintf(format, args...)
	return r
}

// via names where a chain leads: "b" for [a b], "d (via b, c)" for [a b c d].
func via(chain []string) string {
	end := chain[len(chain)-1]
	if len(chain) <= 2 {
		return end
	}
	return fmt.Sprintf("%s (via %s)", end, strings.Join(chain[1:len(chain)-1], ", "))
}

// display turns a name from DNS into text for a tenant: the normal form when it is a
// valid name, else quoted (DNS data is as untrusted as tenant input).
func display(fqdn string) string {
	s := strings.TrimSuffix(fqdn, ".")
	if n, err := domain.Parse(s); err == nil {
		return string(n)
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

func (c *Checker) checkAddresses(ctx context.Context, res Result, fq string, v4 []netip.Addr) (Result, error) {
	six, err := c.follow(ctx, fq, dns.TypeAAAA)
	if err != nil {
		return res, err
	}
	addrs := append(slices.Clone(v4), six.addrs...)
	res.Addresses = addrs
	target := display(c.target)
	if len(addrs) == 0 {
		return fail(res, ProblemNoRecords, "%s has no CNAME, A or AAAA record; add a CNAME record pointing it to %s",
			res.Name, target), nil
	}
	ours, err := c.targetAddresses(ctx)
	if err != nil {
		return res, err
	}
	var foreign []string
	for _, a := range addrs {
		if !slices.Contains(ours, a) {
			foreign = append(foreign, a.String())
		}
	}
	if len(foreign) > 0 {
		var want []string
		for _, a := range ours {
			want = append(want, a.String())
		}
		return fail(res, ProblemWrongAddress, "%s has addresses that are not ours (%s); point it with a CNAME to %s, or for an apex domain use only these addresses: %s",
			res.Name, strings.Join(foreign, ", "), target, strings.Join(want, ", ")), nil
	}
	res.OK = true
	return res, nil
}

// targetAddresses resolves the target's A and AAAA records (through its own CNAMEs).
func (c *Checker) targetAddresses(ctx context.Context) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ch, err := c.follow(ctx, c.target, t)
		if err != nil {
			return nil, err
		}
		out = append(out, ch.addrs...)
	}
	if len(out) == 0 {
		return nil, &TransientError{Name: c.target, Type: "A/AAAA", Server: strings.Join(c.cfg.Servers, ","), Rcode: -1,
			Err: errors.New("the CNAME target has no addresses: check CUSTOM_DOMAIN_CNAME_TARGET and the platform's DNS")}
	}
	return out, nil
}

type chainResult struct {
	chain    []string // FQDNs, starting with the name asked
	reached  bool     // the chain reached the target
	loop     bool
	tooLong  bool
	nxdomain bool         // the last name of the chain does not exist
	addrs    []netip.Addr // records of the asked type at the end of the chain
}

// follow resolves name for qtype, following CNAMEs one answer at a time (a resolver
// may return the whole chain in one answer, or only part of it), and stops at the
// target, a loop, MaxCNAMEHops links, NXDOMAIN or an answer without a further CNAME.
func (c *Checker) follow(ctx context.Context, name string, qtype uint16) (chainResult, error) {
	cur := dns.CanonicalName(name)
	r := chainResult{chain: []string{cur}}
	seen := map[string]bool{cur: true}
	for {
		msg, err := c.query(ctx, cur, qtype)
		if err != nil {
			return r, err
		}
		cnames := map[string]string{}
		for _, rr := range msg.Answer {
			if cn, ok := rr.(*dns.CNAME); ok {
				cnames[dns.CanonicalName(cn.Hdr.Name)] = dns.CanonicalName(cn.Target)
			}
		}
		progressed := false
		for {
			next, ok := cnames[cur]
			if !ok {
				break
			}
			r.chain = append(r.chain, next)
			if next == c.target && name != c.target {
				r.reached = true
				return r, nil
			}
			if seen[next] {
				r.loop = true
				return r, nil
			}
			if len(r.chain)-1 > c.cfg.MaxCNAMEHops {
				r.tooLong = true
				return r, nil
			}
			seen[next] = true
			cur, progressed = next, true
		}
		for _, rr := range msg.Answer {
			if !strings.EqualFold(rr.Header().Name, cur) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					r.addrs = append(r.addrs, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					r.addrs = append(r.addrs, a)
				}
			}
		}
		if msg.Rcode == dns.RcodeNameError {
			r.nxdomain = true
			return r, nil
		}
		if len(r.addrs) > 0 || !progressed {
			return r, nil
		}
		// The answer stopped part-way along the chain: ask about where it stopped.
	}
}

// query asks each server in turn; NOERROR and NXDOMAIN are answers, anything else
// (and no answer) moves on to the next server, and is returned if all fail.
func (c *Checker) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	var last error
	for _, server := range c.cfg.Servers {
		resp, err := c.exchange(ctx, m, server)
		te := &TransientError{Name: name, Type: dns.TypeToString[qtype], Server: server, Rcode: -1, Err: err}
		switch {
		case err != nil:
			var ne net.Error
			te.Timeout = errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
			last = te
		case resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError:
			c.log.Debug().Str("name", name).Str("type", te.Type).Str("server", server).
				Str("rcode", dns.RcodeToString[resp.Rcode]).Int("answers", len(resp.Answer)).Msg("dns answer")
			return resp, nil
		default:
			te.Rcode = resp.Rcode
			te.Err = fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
			last = te
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (c *Checker) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	resp, _, err := c.client.ExchangeContext(qctx, m, server)
	if err == nil && resp.Truncated {
		tcp := *c.client
		tcp.Net = "tcp"
		resp, _, err = tcp.ExchangeContext(qctx, m, server)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("answer is for another question")
	}
	return resp, nil
}

// Servers returns the resolvers the Checker asks, in order.
func (c *Checker) Servers() []string { return slices.Clone(c.cfg.Servers) }
