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
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
// meant for the row's last_error. It is part of the regen task's result, so
// its JSON keys are the contract's snake_case.
type Skipped struct {
	Name   domain.Name `json:"name"`
	Kind   SkipKind    `json:"kind"`
	Reason string      `json:"reason"`
}

// Vetter checks certificates in the certbot layout before a domain may be
// rendered: fullchain.pem and privkey.pem under LetsEncryptDir/live/<name>/
// exist, parse, belong together, are not expired, and the leaf covers the
// name. nginx would refuse the whole file (per-server mode) or fail the
// handshake (variable mode) otherwise.
//
// Results are cached per domain by the identity of its live/<lineage>
// directory (see statDir), so a sweep of 10,000 unchanged domains costs
// 10,000 stat calls, made in parallel; expiry is judged anew on every call.
// A Vetter is safe for concurrent use.
type Vetter struct {
	dir string
	now func() time.Time

	mu    sync.Mutex
	cache map[Domain]*vetEntry
	gen   uint64 // of the current Vet call; entries not seen in it are dropped
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type vetEntry struct {
	dir      fileID // of live/<lineage>
	site     Site
	notAfter time.Time
	skip     *Skipped // a failure that depends only on the files
	gen      uint64
}

// NewVetter returns a Vetter for cfg's LetsEncryptDir and clock.
func NewVetter(cfg Config) *Vetter {
	cfg = cfg.WithDefaults()
	return &Vetter{dir: cfg.LetsEncryptDir, now: cfg.Now, cache: map[Domain]*vetEntry{}}
}

// vetChunk is how many domains Vet checks in parallel before it merges their
// results: its working memory is one chunk, whatever the number of domains.
const vetChunk = 4096

// Vet splits ds into sites to serve and skipped domains, both sorted by
// name. A name listed twice is served from its first lineage in sorted order.
// Besides the two results, its memory does not grow with len(ds): domains are
// checked a chunk at a time, and cache entries are updated in place.
func (v *Vetter) Vet(ds []Domain) (sites []Site, skipped []Skipped) {
	cmpDomain := func(a, b Domain) int {
		return cmp.Or(strings.Compare(string(a.Name), string(b.Name)), strings.Compare(a.lineage(), b.lineage()))
	}
	if !slices.IsSortedFunc(ds, cmpDomain) { // callers usually pass rows sorted by name
		ds = slices.Clone(ds)
		slices.SortFunc(ds, cmpDomain)
	}
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	sites = make([]Site, 0, len(ds))

	type job struct {
		d      Domain
		skip   *Skipped
		dirErr error
		hit    *vetEntry // cached entry still valid
		fresh  vetEntry  // else the files, vetted now
	}
	var jobs [vetChunk]job
	var prev domain.Name
	for start := 0; start < len(ds); {
		// The next chunk, each name once (the first lineage of a name wins).
		n := 0
		for ; start < len(ds) && n < vetChunk; start++ {
			d := ds[start]
			if (n > 0 || start > 0) && d.Name == prev {
				continue
			}
			prev = d.Name
			jobs[n] = job{d: d, skip: checkDomain(d)}
			n++
		}
		// In parallel (stat is a syscall, parsing is CPU): one stat of each
		// lineage directory, and on a cache miss reading and parsing its
		// files. The cache is only read here.
		parallel(n, func(i int) {
			j := &jobs[i]
			if j.skip != nil {
				return
			}
			dir := filepath.Join(v.dir, "live", j.d.lineage())
			id, err := statDir(dir)
			if err != nil {
				j.dirErr = err
				return
			}
			if e, ok := v.cache[j.d]; ok && e.dir == id {
				j.hit = e
				return
			}
			j.fresh = vetFiles(j.d, filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem"))
			j.fresh.dir = id
		})
		for i := range n {
			j := &jobs[i]
			name := j.d.Name
			e := j.hit
			switch {
			case j.skip != nil:
				skipped = append(skipped, *j.skip)
				continue
			case j.dirErr != nil:
				skipped = append(skipped, *fileSkip(name, "certificate", filepath.Join(v.dir, "live", j.d.lineage(), "fullchain.pem"), j.dirErr))
				continue
			case e == nil:
				e = v.cache[j.d]
				if e == nil {
					e = new(vetEntry)
					v.cache[j.d] = e
				}
				*e = j.fresh
			}
			e.gen = v.gen
			switch {
			case e.skip != nil:
				skipped = append(skipped, *e.skip)
			case !now.Before(e.notAfter):
				skipped = append(skipped, Skipped{Name: name, Kind: SkipExpired,
					Reason: fmt.Sprintf("certificate expired on %s; it must be renewed", e.notAfter.UTC().Format(time.RFC3339))})
			default:
				sites = append(sites, e.site)
			}
			*j = job{}
		}
	}
	for d, e := range v.cache {
		if e.gen != v.gen {
			delete(v.cache, d)
		}
	}
	return sites, skipped
}

func checkDomain(d Domain) *Skipped {
	if err := checkName(string(d.Name)); err != nil {
		return &Skipped{Name: d.Name, Kind: SkipInvalidName, Reason: err.Error()}
	}
	if err := checkLineage(d.lineage()); err != nil {
		return &Skipped{Name: d.Name, Kind: SkipInvalidName, Reason: "lineage: " + err.Error()}
	}
	return nil
}

// parallel runs f(0..n-1) on a few goroutines.
func parallel(n int, f func(i int)) {
	workers := min(n, 2*runtime.GOMAXPROCS(0))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
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

// statDir identifies a lineage directory. acme's store swaps the whole
// directory when it saves a version (a new inode) and certbot replaces the
// symlinks inside it (a new mtime), so either way a new certificate changes
// the identity. Files rewritten in place behind the symlinks are not noticed.
func statDir(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	if !st.IsDir() {
		return fileID{}, fmt.Errorf("not a directory")
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
