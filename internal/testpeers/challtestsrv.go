package testpeers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ChallTestSrvPeer is a pebble-challtestsrv serving DNS on loopback. Names it
// was not told about get no A/AAAA answer (its default addresses are off), so
// a test sees unknown names fail as they would on the Internet.
type ChallTestSrvPeer struct {
	DNSAddr string // 127.0.0.1:port, UDP and TCP
	MgmtURL string // http://127.0.0.1:port
	client  *http.Client
}

// ChallTestSrv starts a pebble-challtestsrv with only its DNS server and
// management API enabled.
func ChallTestSrv(t testing.TB) *ChallTestSrvPeer {
	t.Helper()
	bin := lookBinary(t, "pebble-challtestsrv")
	dnsPort := freeUDPPort(t)
	mgmtPort := FreePort(t)
	p := &ChallTestSrvPeer{
		DNSAddr: fmt.Sprintf("127.0.0.1:%d", dnsPort),
		MgmtURL: fmt.Sprintf("http://127.0.0.1:%d", mgmtPort),
		client:  &http.Client{Timeout: 5 * time.Second},
	}
	startProcess(t, filepath.Join(t.TempDir(), "challtestsrv.log"), nil, bin,
		"-defaultIPv4", "", "-defaultIPv6", "",
		"-dnsserver", p.DNSAddr,
		"-management", fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", mgmtPort), 10*time.Second); err != nil {
		t.Fatalf("pebble-challtestsrv management API: %v", err)
	}
	if err := waitTCP(p.DNSAddr, 10*time.Second); err != nil {
		t.Fatalf("pebble-challtestsrv DNS: %v", err)
	}
	return p
}

func (p *ChallTestSrvPeer) post(t testing.TB, path string, body any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("encode %s: %v", path, err)
	}
	req, err := http.NewRequest(http.MethodPost, p.MgmtURL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("request %s: %v", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := httpDo(ctx, p.client, req); err != nil {
		t.Fatalf("challtestsrv %s %s: %v", path, b, err)
	}
}

// AddA makes host answer A queries with ips.
func (p *ChallTestSrvPeer) AddA(t testing.TB, host string, ips ...string) {
	t.Helper()
	p.post(t, "/add-a", map[string]any{"host": host, "addresses": ips})
}

// ClearA removes host's A answers.
func (p *ChallTestSrvPeer) ClearA(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-a", map[string]any{"host": host})
}

// AddAAAA makes host answer AAAA queries with ips.
func (p *ChallTestSrvPeer) AddAAAA(t testing.TB, host string, ips ...string) {
	t.Helper()
	p.post(t, "/add-aaaa", map[string]any{"host": host, "addresses": ips})
}

// ClearAAAA removes host's AAAA answers.
func (p *ChallTestSrvPeer) ClearAAAA(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-aaaa", map[string]any{"host": host})
}

// SetCNAME makes host a CNAME to target.
func (p *ChallTestSrvPeer) SetCNAME(t testing.TB, host, target string) {
	t.Helper()
	p.post(t, "/set-cname", map[string]any{"host": host, "target": target})
}

// ClearCNAME removes host's CNAME.
func (p *ChallTestSrvPeer) ClearCNAME(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-cname", map[string]any{"host": host})
}

// CAA is one CAA record: tag is issue, issuewild or iodef.
type CAA struct{ Tag, Value string }

// AddCAA gives host CAA records.
func (p *ChallTestSrvPeer) AddCAA(t testing.TB, host string, records ...CAA) {
	t.Helper()
	pol := make([]map[string]string, 0, len(records))
	for _, r := range records {
		pol = append(pol, map[string]string{"tag": r.Tag, "value": r.Value})
	}
	p.post(t, "/add-caa", map[string]any{"host": host, "policies": pol})
}

// ClearCAA removes host's CAA records.
func (p *ChallTestSrvPeer) ClearCAA(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-caa", map[string]any{"host": host})
}

// SetServfail makes every query for host answer SERVFAIL.
func (p *ChallTestSrvPeer) SetServfail(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/set-servfail", map[string]any{"host": host})
}

// ClearServfail undoes SetServfail.
func (p *ChallTestSrvPeer) ClearServfail(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-servfail", map[string]any{"host": host})
}

// SetTXT makes host answer TXT queries with value (challtestsrv's /set-txt,
// meant for DNS-01 challenges, serves any name).
func (p *ChallTestSrvPeer) SetTXT(t testing.TB, host, value string) {
	t.Helper()
	p.post(t, "/set-txt", map[string]any{"host": strings.TrimSuffix(host, ".") + ".", "value": value})
}

// ClearTXT removes host's TXT answers.
func (p *ChallTestSrvPeer) ClearTXT(t testing.TB, host string) {
	t.Helper()
	p.post(t, "/clear-txt", map[string]any{"host": strings.TrimSuffix(host, ".") + "."})
}
