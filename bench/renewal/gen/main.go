// Command gen fills a certbot-layout store with N lineages (one test CA,
// ECDSA P-256 leaves with varied lifetimes), for the renewal-scan benchmark.
//
//	go run ./bench/renewal/gen -dir /tmp/store -n 10000
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
)

func main() {
	dir := flag.String("dir", "", "store directory (created)")
	n := flag.Int("n", 10000, "lineages to create")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "gen: -dir is required")
		os.Exit(2)
	}
	if err := run(*dir, *n); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string, n int) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: now.Add(-365 * 24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	store := acme.NewStore(dir)
	for i := range n {
		name, err := domain.Parse(fmt.Sprintf("tenant-%05d.example.com", i))
		if err != nil {
			return err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		// Issued between 0 and 89 days ago, 90-day lifetime: a third are due.
		issued := now.Add(-time.Duration(i%90) * 24 * time.Hour)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i) + 2), Subject: pkix.Name{CommonName: string(name)},
			DNSNames: []string{string(name)}, NotBefore: issued, NotAfter: issued.Add(90 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		_, err = store.Save(acme.NameFor(name), acme.Issued{
			Cert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			Chain: chain,
			Key:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		}, acme.RenewalParams{Server: "https://acme-staging-v02.api.letsencrypt.org/directory",
			Account: "0123456789abcdef0123456789abcdef", Webroot: "/var/www/letsencrypt",
			KeyType: acme.EC256, Domains: []string{string(name)}})
		if err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
	}
	return nil
}
