package nginxconf

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/midsummer/certmgr/domain"
)

// SkipKind classifies why a domain was left out of the configuration.
type SkipKind string

const (
	SkipInvalidName SkipKind = "invalid_name"
	SkipMissing     SkipKind = "missing"
	SkipUnreadable  SkipKind = "unreadable"
	SkipMismatch    SkipKind = "key_mismatch"
	SkipExpired     SkipKind = "expired"
	SkipNotCovered  SkipKind = "not_covered"
)

// Skipped is a domain left out of the configuration. Reason is short and
// meant for the row's last_error.
type Skipped struct {
	Name   domain.Name
	Kind   SkipKind
	Reason string
}

// Vetter checks certificates in the certbot layout before a domain may be
// rendered: fullchain.pem and privkey.pem under LetsEncryptDir/live/<name>/
// exist, parse, belong together, are not expired, and the leaf covers the
// name. nginx would refuse the whole file (per-server mode) or fail the
// handshake (variable mode) otherwise.
//
// Results are cached per domain by the identity of both files (device, inode,
// size, modification time, after following certbot's symlinks), so a sweep of
// 10,000 unchanged domains costs 20,000 stat calls; expiry is judged anew on
// every call. A Vetter is safe for concurrent use.
type Vetter struct {
	dir string
	now func() time.Time

	mu    sync.Mutex
	cache map[Domain]vetEntry
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type vetEntry struct {
	cert, key fileID
	site      Site
	notAfter  time.Time
	skip      *Skipped // a failure that depends only on the files
}

// NewVetter returns a Vetter for cfg's LetsEncryptDir and clock.
func NewVetter(cfg Config) *Vetter {
	cfg = cfg.WithDefaults()
	return &Vetter{dir: cfg.LetsEncryptDir, now: cfg.Now, cache: map[Domain]vetEntry{}}
}

// Vet splits ds into sites to serve and skipped domains, both sorted by
// name. A name listed twice is served from its first lineage in sorted order.
func (v *Vetter) Vet(ds []Domain) (sites []Site, skipped []Skipped) {
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b Domain) int {
		return cmp.Or(strings.Compare(string(a.Name), string(b.Name)), strings.Compare(a.lineage(), b.lineage()))
	})
	ds = slices.CompactFunc(ds, func(a, b Domain) bool { return a.Name == b.Name })
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := make(map[Domain]bool, len(ds))
	for _, d := range ds {
		seen[d] = true
		s, skip := v.vetOne(d, now)
		if skip != nil {
			skipped = append(skipped, *skip)
			continue
		}
		sites = append(sites, s)
	}
	for d := range v.cache {
		if !seen[d] {
			delete(v.cache, d)
		}
	}
	return sites, skipped
}

func (v *Vetter) vetOne(d Domain, now time.Time) (Site, *Skipped) {
	n := d.Name
	skip := func(k SkipKind, format string, args ...any) *Skipped {
		return &Skipped{Name: n, Kind: k, Reason: fmt.Sprintf(format, args...)}
	}
	if err := checkName(string(n)); err != nil {
		return Site{}, skip(SkipInvalidName, "%s", err)
	}
	if err := checkName(d.lineage()); err != nil {
		return Site{}, skip(SkipInvalidName, "lineage: %s", err)
	}
	certPath := filepath.Join(v.dir, "live", d.lineage(), "fullchain.pem")
	keyPath := filepath.Join(v.dir, "live", d.lineage(), "privkey.pem")
	certID, err := statID(certPath)
	if err != nil {
		delete(v.cache, d)
		return Site{}, fileSkip(n, "certificate", certPath, err)
	}
	keyID, err := statID(keyPath)
	if err != nil {
		delete(v.cache, d)
		return Site{}, fileSkip(n, "private key", keyPath, err)
	}
	e, ok := v.cache[d]
	if !ok || e.cert != certID || e.key != keyID {
		e = vetFiles(d, certPath, keyPath)
		e.cert, e.key = certID, keyID
		v.cache[d] = e
	}
	if e.skip != nil {
		return Site{}, e.skip
	}
	if !now.Before(e.notAfter) {
		return Site{}, skip(SkipExpired, "certificate expired on %s; it must be renewed", e.notAfter.UTC().Format(time.RFC3339))
	}
	return e.site, nil
}

func fileSkip(n domain.Name, what, path string, err error) *Skipped {
	if errors.Is(err, fs.ErrNotExist) {
		return &Skipped{Name: n, Kind: SkipMissing, Reason: fmt.Sprintf("%s file %s is missing; the certificate must be issued again", what, path)}
	}
	return &Skipped{Name: n, Kind: SkipUnreadable, Reason: fmt.Sprintf("%s file %s: %s", what, path, errText(err))}
}

// vetFiles does the parsing; its result depends only on the two files.
func vetFiles(d Domain, certPath, keyPath string) vetEntry {
	n := d.Name
	fail := func(k SkipKind, format string, args ...any) vetEntry {
		return vetEntry{skip: &Skipped{Name: n, Kind: k, Reason: fmt.Sprintf(format, args...)}}
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return vetEntry{skip: fileSkip(n, "certificate", certPath, err)}
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return vetEntry{skip: fileSkip(n, "private key", keyPath, err)}
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return fail(SkipUnreadable, "certificate file %s holds no PEM certificate", certPath)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fail(SkipUnreadable, "certificate file %s does not parse: %s", certPath, errText(err))
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return fail(SkipMismatch, "private key %s does not belong to the certificate", keyPath)
		}
		return fail(SkipUnreadable, "certificate or key of %s does not load: %s", n, errText(err))
	}
	if err := leaf.VerifyHostname(string(n)); err != nil {
		return fail(SkipNotCovered, "certificate is for %s, not %s", strings.Join(leaf.DNSNames, ", "), n)
	}
	sum := sha256.Sum256(leaf.Raw)
	return vetEntry{site: Site{Domain: d, CertSHA256: hex.EncodeToString(sum[:])}, notAfter: leaf.NotAfter}
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	if !st.Mode().IsRegular() {
		return fileID{}, fmt.Errorf("not a regular file")
	}
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// errText strips Go's "open PATH: " wrapping, which repeats the path.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
