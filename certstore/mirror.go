package certstore

import (
	"encoding/hex"
	"fmt"

	"github.com/go-acme/lego/v5/certcrypto"

	"github.com/midsummer/certmgr/acme"
)

// The certbot layout is package acme's: it writes and reads the files
// (acme.WriteLineageFiles, acme.ReadLineageFiles, the accounts tree). What
// is certstore's own is the translation between its Lineage and those files.

// WriteLineage writes l into the certbot-layout directory dir, every version
// in l.Versions with version l.Current live, as acme.WriteLineageFiles does
// (sync: fsynced, for an export; without, for a directory rebuilt from the
// store at every start). changed says whether anything a reader sees
// changed.
func WriteLineage(dir string, l Lineage, sync bool) (changed bool, err error) {
	files := acme.LineageFiles{Name: acme.LineageName(l.Name), Live: l.Current, RenewalConf: []byte(l.RenewalConf)}
	for _, v := range l.Versions {
		files.Versions = append(files.Versions, acme.ArchiveVersion{N: v.N, Cert: v.Cert, Chain: v.Chain, Fullchain: v.Fullchain, Privkey: v.Privkey})
	}
	return acme.WriteLineageFiles(dir, files, sync)
}

// ReadLineage reads lineage name from a certbot-layout directory
// (acme.ReadLineageFiles: every complete version, the live one, the renewal
// configuration), with each version's serial and validity and the live
// certificate's names, as acme lists them.
func ReadLineage(dir, name string) (Lineage, error) {
	files, err := acme.ReadLineageFiles(dir, acme.LineageName(name))
	if err != nil {
		return Lineage{Name: name}, err
	}
	l := Lineage{Name: name, Current: files.Live, RenewalConf: string(files.RenewalConf)}
	for _, f := range files.Versions {
		leaf, err := certcrypto.ParsePEMCertificate(f.Cert)
		if err != nil {
			return l, fmt.Errorf("read lineage %s version %d: %w", name, f.N, err)
		}
		l.Versions = append(l.Versions, Version{N: f.N, Cert: f.Cert, Chain: f.Chain, Fullchain: f.Fullchain, Privkey: f.Privkey,
			Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter})
		if f.N == files.Live {
			// The common name first.
			l.Domains = certcrypto.ExtractDomains(leaf)
		}
	}
	return l, nil
}
