package testpeers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"
)

// These smoke tests prove each peer the harness hands out is the real thing.

func TestPythonCeleryMessageReadFromRedis(t *testing.T) {
	t.Parallel()
	r := Redis(t)
	c := Celery(t, r.URL)
	id := c.Send(t, SendOptions{
		Task:   "tenant.tasks.issue_custom_domain_task",
		Args:   []any{42},
		Kwargs: map[string]any{"force": true},
	})

	raw, err := redis.Bytes(r.Pool().Get().Do("RPOP", "certmgr"))
	if err != nil {
		t.Fatalf("no message on list certmgr: %v", err)
	}
	var env struct {
		Body            string         `json:"body"`
		ContentType     string         `json:"content-type"`
		ContentEncoding string         `json:"content-encoding"`
		Headers         map[string]any `json:"headers"`
		Properties      struct {
			BodyEncoding string `json:"body_encoding"`
			DeliveryInfo struct {
				RoutingKey string `json:"routing_key"`
			} `json:"delivery_info"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("decode kombu envelope: %v\n%s", err, raw)
	}
	if env.Headers["id"] != id || env.Headers["task"] != "tenant.tasks.issue_custom_domain_task" || env.Headers["lang"] != "py" {
		t.Fatalf("headers = %v, want id %s and the task name", env.Headers, id)
	}
	if env.ContentType != "application/json" || env.Properties.BodyEncoding != "base64" || env.Properties.DeliveryInfo.RoutingKey != "certmgr" {
		t.Fatalf("envelope = %+v", env)
	}
	body, err := base64.StdEncoding.DecodeString(env.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(body, &parts); err != nil || len(parts) != 3 {
		t.Fatalf("protocol 2 body = %s (%v)", body, err)
	}
	if string(parts[0]) != "[42]" || string(parts[1]) != `{"force": true}` {
		t.Fatalf("args, kwargs = %s, %s", parts[0], parts[1])
	}
}

func TestPostgresSchemaHasContractTable(t *testing.T) {
	t.Parallel()
	pg := Postgres(t)
	id := pg.InsertDomain(t, "shop.example.com")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var schema, status, lastErr string
	err = c.QueryRow(ctx, `SELECT table_schema FROM information_schema.tables WHERE table_name = 'tenant_customdomain' AND table_schema = current_schema()`).Scan(&schema)
	if err != nil || schema != pg.Schema {
		t.Fatalf("tenant_customdomain in %q, want %q (%v)", schema, pg.Schema, err)
	}
	if err := c.QueryRow(ctx, `SELECT status, last_error FROM tenant_customdomain WHERE id = $1`, id).Scan(&status, &lastErr); err != nil {
		t.Fatal(err)
	}
	if status != "pending" || lastErr != "" {
		t.Fatalf("row = %q %q", status, lastErr)
	}
}

func TestPebbleDirectoryAndChallTestSrvDNS(t *testing.T) {
	t.Parallel()
	p := Pebble(t, PebbleOptions{})
	resp, err := p.Client.Get(p.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	err = json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if err != nil || dir["newOrder"] == nil || dir["renewalInfo"] == nil {
		t.Fatalf("directory = %v (%v)", dir, err)
	}

	p.DNS.SetCNAME(t, "shop.example.com", "custom.midsummer.test")
	p.DNS.AddA(t, "custom.midsummer.test", "127.0.0.1")
	m := new(dns.Msg)
	m.SetQuestion("shop.example.com.", dns.TypeA)
	in, err := dns.Exchange(m, p.DNS.DNSAddr)
	if err != nil {
		t.Fatal(err)
	}
	var cname, a string
	for _, rr := range in.Answer {
		switch v := rr.(type) {
		case *dns.CNAME:
			cname = v.Target
		case *dns.A:
			a = v.A.String()
		}
	}
	if cname != "custom.midsummer.test." || a != "127.0.0.1" {
		t.Fatalf("answer = %v", in.Answer)
	}

	m.SetQuestion("unknown.example.com.", dns.TypeA)
	in, err = dns.Exchange(m, p.DNS.DNSAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 0 {
		t.Fatalf("unknown name answered %v; default addresses should be off", in.Answer)
	}
}

func TestNginxServesTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeLoopbackTLS(t, dir)
	n := Nginx(t, NginxOptions{NoStart: true})
	conf := fmt.Sprintf(`server {
    listen 127.0.0.1:%d ssl;
    server_name localhost;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "hello from nginx\n"; }
}
`, n.HTTPSPort, certFile, keyFile)
	if err := os.WriteFile(filepath.Join(n.ConfDir, "test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Test(context.Background()); err != nil {
		t.Fatalf("nginx -t: %v", err)
	}
	n.Start(t)

	pemBytes, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}}
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/", n.HTTPSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "hello from nginx") {
		t.Fatalf("GET = %s %q", resp.Status, b)
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "localhost" {
		t.Fatalf("served certificate = %+v", resp.TLS)
	}

	if err := os.WriteFile(filepath.Join(n.ConfDir, "broken.conf"), []byte("server { listen oops; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Test(context.Background()); err == nil || !strings.Contains(err.Error(), "broken.conf") {
		t.Fatalf("nginx -t on a broken file = %v, want nginx's message naming broken.conf", err)
	}
}
