package redisbroker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// rediss:// with Celery's ssl_* parameters against a redis-server that
// speaks only TLS and wants a client certificate, with a CA the test made.
func TestRedissHonoursCelerySSLParameters(t *testing.T) {
	t.Parallel()
	s := testpeers.StartRedisTLS(t)
	ping := func(rawURL string) error {
		b, err := New(Config{URL: rawURL, Queue: "certmgr", DialTimeout: 3 * time.Second, CommandTimeout: 3 * time.Second})
		if err != nil {
			return err
		}
		defer b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return b.Ping(ctx)
	}
	base := fmt.Sprintf("rediss://localhost:%d/0", s.Port)
	client := "&ssl_certfile=" + s.ClientCert + "&ssl_keyfile=" + s.ClientKey
	for _, tc := range []struct {
		desc, url string
		wantErr   string // "" = must work; "*" = any error
	}{
		{"everything, CERT_REQUIRED", s.URL(0), ""},
		{"lower-case spelling", base + "?ssl_cert_reqs=required&ssl_ca_certs=" + s.CAFile + client, ""},
		{"CERT_OPTIONAL still verifies", base + "?ssl_cert_reqs=CERT_OPTIONAL" + client, "certificate signed by unknown authority"},
		{"no CA: the system roots do not know it", base + "?ssl_cert_reqs=CERT_REQUIRED" + client, "certificate signed by unknown authority"},
		{"CERT_NONE does not verify", base + "?ssl_cert_reqs=CERT_NONE" + client, ""},
		{"by address: the certificate names localhost only", fmt.Sprintf("rediss://127.0.0.1:%d/0?ssl_cert_reqs=required&ssl_ca_certs=%s%s", s.Port, s.CAFile, client), "127.0.0.1"},
		{"ssl_check_hostname=false checks the chain only", fmt.Sprintf("rediss://127.0.0.1:%d/0?ssl_cert_reqs=required&ssl_check_hostname=false&ssl_ca_certs=%s%s", s.Port, s.CAFile, client), ""},
		{"no client certificate", base + "?ssl_cert_reqs=required&ssl_ca_certs=" + s.CAFile, "*"},
		{"plain redis:// to a TLS port", fmt.Sprintf("redis://localhost:%d/0", s.Port), "*"},
	} {
		err := ping(tc.url)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.desc, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("%s: connected", tc.desc)
		case tc.wantErr != "" && tc.wantErr != "*" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("%s: error %q does not say %q", tc.desc, err, tc.wantErr)
		}
	}
}

// The broker over TLS does its real work, including the blocking peek on
// its raw connection.
func TestBrokerOverTLSAndUnixSocket(t *testing.T) {
	t.Parallel()
	tlsRedis := testpeers.StartRedisTLS(t)
	sock := testpeers.StartRedisSocket(t)
	msg := fixture(t, "p2_send_task__db0__certmgr__0.json")
	for _, tc := range []struct {
		url  string
		push func()
	}{
		{tlsRedis.URL(2), nil},
		{"redis+socket://" + sock.Path + "?virtual_host=3", func() {
			c := sock.Pool().Get()
			defer c.Close()
			_, _ = c.Do("SELECT", 3)
			if _, err := c.Do("LPUSH", "certmgr", msg); err != nil {
				t.Error(err)
			}
		}},
		{"unix://" + sock.Path + "?db=4", func() {
			c := sock.Pool().Get()
			defer c.Close()
			_, _ = c.Do("SELECT", 4)
			if _, err := c.Do("LPUSH", "certmgr", msg); err != nil {
				t.Error(err)
			}
		}},
	} {
		b, err := New(Config{URL: tc.url, Queue: "certmgr"})
		if err != nil {
			t.Fatal(err)
		}
		push := tc.push
		if push == nil { // over TLS: push through the broker's own pool
			push = func() {
				c, err := b.conn(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				if _, err := c.Do("LPUSH", "certmgr", msg); err != nil {
					t.Error(err)
				}
			}
		}
		done := make(chan []Delivery, 1)
		go func() {
			ds, err := b.Fetch(context.Background(), 1, 10*time.Second)
			if err != nil {
				t.Errorf("%s: %v", tc.url, err)
			}
			done <- ds
		}()
		time.Sleep(0) // the push may land before or during the wait: both must work
		push()
		if ds := <-done; len(ds) != 1 || ds[0].Tag == "" {
			t.Errorf("%s: fetched %+v", tc.url, ds)
		} else if err := b.Ack(context.Background(), ds[0].Tag); err != nil {
			t.Errorf("%s: ack: %v", tc.url, err)
		}
		b.Close()
	}
	c := sock.Pool().Get()
	defer c.Close()
	for _, db := range []int{3, 4} {
		_, _ = c.Do("SELECT", db)
		if n, _ := redis.Int(c.Do("HLEN", "unacked")); n != 0 {
			t.Errorf("db %d: unacked holds %d", db, n)
		}
	}
}
