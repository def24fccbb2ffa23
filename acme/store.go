package acme

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"golang.org/x/sys/unix"

	"github.com/midsummer/certmgr/domain"
)

// The store keeps certbot's layout under Dir:
//
//	archive/<name>/{cert,chain,fullchain,privkey}N.pem   every version, never changed
//	live/<name>/{cert,chain,fullchain,privkey}.pem       relative symlinks to the newest N
//	live/<name>/README, live/README                      as certbot writes them
//	renewal/<name>.conf                                  certbot's renewal configuration
//
// Making a version live. nginx reads live/<name>/fullchain.pem and then
// live/<name>/privkey.pem when it (re)loads. certbot replaces the four symlinks
// one by one, so a reload between two of those renames can pair the new
// certificate with the old key. The store instead:
//
//  1. writes every archive file of version N to a temporary name, fsyncs and
//     renames it into place (archive files are immutable once named);
//  2. builds a complete new directory live/.<name>.new-XXXX holding the four
//     symlinks and the README;
//  3. exchanges it with live/<name> in one renameat2(RENAME_EXCHANGE), then
//     removes the old directory (now under the temporary name).
//
// Every lookup of live/<name>/... therefore resolves either entirely in the old
// directory or entirely in the new one, and a reader that opens the directory
// once and reads the links through that descriptor (as Load does) always gets
// one whole version. A reader that opens live/<name>/fullchain.pem just before
// the exchange and live/<name>/privkey.pem just after can still straddle it (no
// file system can prevent that for two separate path lookups; the window is
// one rename wide); nginx then refuses the mismatched pair and keeps serving
// its previous configuration, and the next reload (which the pipeline triggers
// after Save returns) reads the new pair. A configuration that names
// Lineage.Archive paths instead (immutable fullchainN.pem/privkeyN.pem) closes
// even that window.
// If the process dies at any point, live/<name> is still the previous complete
// directory: at worst unused archive files or a hidden staging directory are
// left, which the next Save removes or skips. On file systems without
// RENAME_EXCHANGE the store falls back to two renames, where a reader may find
// live/<name> missing for an instant, but never a mixed pair.

// Kinds of files in a lineage, in certbot's order.
var kinds = []string{"cert", "privkey", "chain", "fullchain"}

// staleAfter is the age after which a temporary file or staging directory is
// taken for the leftover of a crashed Save rather than another process's work
// in progress.
const staleAfter = 10 * time.Minute

// stagingSuffixRE matches what stageLive appends to live/.<name>.new-, and
// nothing another lineage's staging directory could end with.
var stagingSuffixRE = regexp.MustCompile(`^[0-9a-f]{16}(\.old)?$`)

var archiveFileRE = regexp.MustCompile(`^(cert|privkey|chain|fullchain)([0-9]+)\.pem$`)

// certbotVersion is written as the renewal configuration's version, matching
// the Debian certbot that reads these stores.
const certbotVersion = "2.1.0"

// LineageName is the name of a certificate lineage, certbot's --cert-name:
// by default the first domain of the certificate, or one followed by
// certbot's -NNNN suffix (example.com-0001), but any name an operator chose
// (custom-name). It is always safe as a single path element and as one word
// in nginx's configuration.
type LineageName string

// NameFor is the lineage name certbot would give a certificate for d.
func NameFor(d domain.Name) LineageName { return LineageName(d) }

var suffixRE = regexp.MustCompile(`^(.+)-([0-9]{4})$`)

// lineageNameRE is what certmgr accepts as a lineage name: letters, digits,
// '.', '_' and '-', starting with a letter or digit (no hidden or staging
// directory, no path separator, nothing nginx reads as syntax).
var lineageNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseLineageName accepts a certbot certificate name made of letters,
// digits, '.', '_' and '-' that starts with a letter or digit, up to 250
// characters (renewal/<name>.conf must fit a file name), and nothing else.
func ParseLineageName(s string) (LineageName, error) {
	if len(s) > 250 || !lineageNameRE.MatchString(s) || strings.Contains(s, "..") {
		return "", fmt.Errorf("invalid lineage name %q: want letters, digits, '.', '_' and '-', starting with a letter or digit", s)
	}
	return LineageName(s), nil
}

// baseDomain is the domain a lineage is named after: its name, or its name
// without certbot's -NNNN suffix; "" when that is no domain (a custom name).
func (n LineageName) baseDomain() domain.Name {
	base := string(n)
	if m := suffixRE.FindStringSubmatch(base); m != nil {
		if d, err := domain.Parse(m[1]); err == nil && string(d) == m[1] {
			return d
		}
	}
	if d, err := domain.Parse(base); err == nil && string(d) == base {
		return d
	}
	return ""
}

func (n LineageName) String() string { return string(n) }

// Paths are the four live paths of a lineage, the ones nginx is configured with.
type Paths struct {
	Cert      string
	Chain     string
	Fullchain string
	Privkey   string
}

// Lineage is a certificate lineage as found on disk.
type Lineage struct {
	Name LineageName
	// Domains are the certificate's DNS names, the first one its common name
	// when it has one.
	Domains   []string
	Version   int // N of the live archive files
	KeyType   KeyType
	Serial    string // hex
	NotBefore time.Time
	NotAfter  time.Time
	Live      Paths
	// Archive are the files of this version in archive/<name>/, which never
	// change once written: a server configured with these paths can never read
	// a certificate and a key of different versions, even in the instant a new
	// version is made live.
	Archive Paths
	// RenewalConf is renewal/<name>.conf; Server its [renewalparams] server.
	RenewalConf string
	Server      string
	// Settings are the renewal settings certbot wrote in RenewalConf.
	Settings RenewalSettings
	// Err says why the lineage is broken (missing or mismatched files); the
	// other fields are then only partly filled.
	Err error

	leaf   *x509.Certificate
	issuer *x509.Certificate
	pem    []byte // the live cert.pem
}

// Leaf is the live certificate, nil when the lineage is broken.
func (l Lineage) Leaf() *x509.Certificate { return l.leaf }

// Lifetime is NotAfter - NotBefore.
func (l Lineage) Lifetime() time.Duration { return l.NotAfter.Sub(l.NotBefore) }

// Issued is a new certificate version to store, PEM encoded.
type Issued struct {
	Cert  []byte // the leaf
	Chain []byte // the intermediates
	Key   []byte // the private key
}

// RenewalParams are the [renewalparams] certbot needs to show and renew a lineage.
type RenewalParams struct {
	Server  string // ACME directory URL
	Account string // account id
	Webroot string
	KeyType KeyType
	Domains []string // for [[webroot_map]]
}

// Store is a certbot-layout certificate store. It is safe for concurrent use in
// one process; across processes, callers serialise work on one lineage (the
// issue pipeline holds a per-domain lock).
type Store struct {
	dir string

	mu    sync.Mutex
	locks map[LineageName]*sync.Mutex

	// cache keeps lineages read for Serving, each with the identity of its
	// files when read (see index.go).
	cacheMu sync.Mutex
	cache   map[LineageName]cachedLineage

	// journal, when set, is told of each certificate before Save writes it.
	journal SaveJournal

	// hook, when set (tests only), is called at each step of Save; a test
	// process kills itself there to show a crash leaves the store intact.
	hook func(step string)
}

// SaveJournal hears of the certificates a Store saves (Config.Journal).
type SaveJournal interface {
	// Saving is called with lineage n and the new leaf certificate (PEM)
	// before any file of the version is written; an error stops the Save.
	// done is called when the Save returns, whether it wrote the version or
	// not.
	Saving(n LineageName, cert []byte) (done func(), err error)
}

// NewStore opens the store rooted at dir (LETSENCRYPT_DIR). It creates nothing
// until the first Save.
func NewStore(dir string) *Store {
	return &Store{dir: dir, locks: map[LineageName]*sync.Mutex{}, cache: map[LineageName]cachedLineage{}}
}

// Dir is the store's root.
func (s *Store) Dir() string { return s.dir }

func (s *Store) liveDir(n LineageName) string    { return filepath.Join(s.dir, "live", string(n)) }
func (s *Store) archiveDir(n LineageName) string { return filepath.Join(s.dir, "archive", string(n)) }
func (s *Store) confPath(n LineageName) string {
	return filepath.Join(s.dir, "renewal", string(n)+".conf")
}

// PathsFor are the live paths lineage n has, or will have once saved.
func (s *Store) PathsFor(n LineageName) Paths {
	live := s.liveDir(n)
	return Paths{
		Cert:      filepath.Join(live, "cert.pem"),
		Chain:     filepath.Join(live, "chain.pem"),
		Fullchain: filepath.Join(live, "fullchain.pem"),
		Privkey:   filepath.Join(live, "privkey.pem"),
	}
}

func (s *Store) lock(n LineageName) func() {
	s.mu.Lock()
	l, ok := s.locks[n]
	if !ok {
		l = &sync.Mutex{}
		s.locks[n] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (s *Store) step(name string) {
	if s.hook != nil {
		s.hook(name)
	}
}

// List reads every lineage that has a renewal configuration, as `certbot
// certificates` does, sorted by name. Broken lineages are included with Err set;
// the error return is for a store that cannot be read at all.
func (s *Store) List() ([]Lineage, error) {
	if err := s.checkRoot(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "renewal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list lineages: %w", err)
	}
	var out []Lineage
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok || e.IsDir() {
			continue
		}
		n, err := ParseLineageName(base)
		if err != nil {
			// Shown, never used as a path: Save and Load validate again.
			out = append(out, Lineage{Name: LineageName(base), RenewalConf: filepath.Join(s.dir, "renewal", e.Name()), Err: err})
			continue
		}
		out = append(out, s.load(n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// checkRoot refuses a store whose root is missing or not a directory: a
// mistyped LETSENCRYPT_DIR is an error, not an empty store. A root without
// renewal/ is an empty store (nothing issued yet).
func (s *Store) checkRoot() error {
	info, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("certificate store %s (LETSENCRYPT_DIR): %w", s.dir, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("certificate store %s (LETSENCRYPT_DIR) is not a directory", s.dir)
	}
	return nil
}

// Load reads lineage n. A lineage that exists but is broken is returned with
// Err set and a nil error; the error is fs.ErrNotExist when there is no trace of
// it (no renewal configuration and no live directory).
func (s *Store) Load(n LineageName) (Lineage, error) {
	if _, err := ParseLineageName(string(n)); err != nil {
		return Lineage{}, err
	}
	_, errConf := os.Stat(s.confPath(n))
	_, errLive := os.Lstat(s.liveDir(n))
	if errors.Is(errConf, fs.ErrNotExist) && errors.Is(errLive, fs.ErrNotExist) {
		return Lineage{}, fmt.Errorf("load lineage %s: %w", n, fs.ErrNotExist)
	}
	return s.load(n), nil
}

// NameForNew picks the name of a new lineage for d: d itself when no lineage
// of that name exists (or the one there is broken or for d alone), else the
// first free d-NNNN, as certbot does.
func (s *Store) NameForNew(d domain.Name) (LineageName, error) {
	for i := 0; i < 10000; i++ {
		n := NameFor(d)
		if i > 0 {
			n = LineageName(fmt.Sprintf("%s-%04d", d, i))
		}
		l, err := s.Load(n)
		if errors.Is(err, fs.ErrNotExist) {
			return n, nil
		}
		if err != nil {
			return "", err
		}
		if l.Err != nil || slices.Equal(l.Domains, []string{string(d)}) {
			return n, nil
		}
	}
	return "", fmt.Errorf("no free lineage name for %s", d)
}

func (s *Store) load(n LineageName) Lineage {
	l := s.loadOnce(n)
	if l.Err != nil {
		// A Save may have exchanged and removed the directory just read:
		// look once more before calling the lineage broken.
		l = s.loadOnce(n)
	}
	return l
}

func (s *Store) loadOnce(n LineageName) Lineage {
	l := Lineage{Name: n, Live: s.PathsFor(n), RenewalConf: s.confPath(n)}
	conf, err := readRenewalConf(l.RenewalConf)
	if err != nil {
		l.Err = err
		return l
	}
	l.Server = conf.params["server"]
	l.Settings = conf.settings()

	archive := s.archiveDir(n)
	targets := map[string]string{}
	// Read the four links through one open descriptor of live/<name>: if Save
	// exchanges the directory meanwhile, all four still come from the same
	// version (archive files never change once written).
	dfd, err := unix.Open(s.liveDir(n), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		l.Err = fmt.Errorf("open %s: %w", s.liveDir(n), err)
		return l
	}
	defer unix.Close(dfd)
	for _, kind := range kinds {
		link := filepath.Join(s.liveDir(n), kind+".pem")
		target, err := readlinkat(dfd, kind+".pem")
		if err != nil {
			l.Err = fmt.Errorf("%s: expected a symlink: %w", link, err)
			return l
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		target = filepath.Clean(target)
		if filepath.Dir(target) != archive {
			// Read only inside this lineage's archive: a planted link must not
			// make certmgr serve or copy some other file.
			l.Err = fmt.Errorf("%s points to %s, outside %s", link, target, archive)
			return l
		}
		m := archiveFileRE.FindStringSubmatch(filepath.Base(target))
		if m == nil || m[1] != kind {
			l.Err = fmt.Errorf("%s points to %s, not a %sN.pem file", link, target, kind)
			return l
		}
		targets[kind] = target
		if kind == "cert" {
			l.Version, _ = strconv.Atoi(m[2])
		}
	}
	l.Archive = Paths{Cert: targets["cert"], Chain: targets["chain"], Fullchain: targets["fullchain"], Privkey: targets["privkey"]}
	certPEM, err := os.ReadFile(targets["cert"])
	if err != nil {
		l.Err = fmt.Errorf("read certificate: %w", err)
		return l
	}
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		l.Err = fmt.Errorf("parse %s: %w", targets["cert"], err)
		return l
	}
	l.leaf, l.pem = leaf, certPEM
	l.Domains = certcrypto.ExtractDomains(leaf)
	l.KeyType = keyTypeOf(leaf.PublicKey)
	l.Serial = hex.EncodeToString(leaf.SerialNumber.Bytes())
	l.NotBefore, l.NotAfter = leaf.NotBefore, leaf.NotAfter

	keyPEM, err := os.ReadFile(targets["privkey"])
	if err != nil {
		l.Err = fmt.Errorf("read private key: %w", err)
		return l
	}
	key, err := certcrypto.ParsePEMPrivateKey(keyPEM)
	if err != nil {
		l.Err = fmt.Errorf("parse %s: %w", targets["privkey"], err)
		return l
	}
	if !samePublicKey(key, leaf) {
		l.Err = fmt.Errorf("%s does not match the certificate %s", targets["privkey"], targets["cert"])
		return l
	}
	full, err := os.ReadFile(targets["fullchain"])
	if err != nil {
		l.Err = fmt.Errorf("read fullchain: %w", err)
		return l
	}
	fullCerts, err := certcrypto.ParsePEMBundle(full)
	if err != nil || !fullCerts[0].Equal(leaf) {
		l.Err = fmt.Errorf("%s does not start with the certificate %s", targets["fullchain"], targets["cert"])
		return l
	}
	if len(fullCerts) > 1 {
		l.issuer = fullCerts[1]
	}
	return l
}

func readlinkat(dfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return string(buf[:n]), nil
}

func samePublicKey(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// Save stores a new version of lineage n and makes it live (see the comment at
// the top of this file for how). A new lineage also gets its renewal
// configuration; an existing one keeps its own, as certbot's files are read as
// they are.
func (s *Store) Save(n LineageName, c Issued, params RenewalParams) (Lineage, error) {
	if _, err := ParseLineageName(string(n)); err != nil {
		return Lineage{}, err
	}
	if err := checkIssued(c); err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}
	unlock := s.lock(n)
	defer unlock()
	if s.journal != nil {
		done, err := s.journal.Saving(n, c.Cert)
		if err != nil {
			return Lineage{}, fmt.Errorf("save %s: %w", n, err)
		}
		defer done()
	}

	for _, d := range []string{s.dir, filepath.Join(s.dir, "archive"), filepath.Join(s.dir, "live"),
		filepath.Join(s.dir, "renewal"), s.archiveDir(n)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Lineage{}, fmt.Errorf("save %s: %w", n, err)
		}
	}
	if err := realDirs(filepath.Join(s.dir, "archive"), filepath.Join(s.dir, "live"), filepath.Join(s.dir, "renewal")); err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}
	if err := writeIfMissing(filepath.Join(s.dir, "live", "README"), []byte(liveReadme("[cert name]/")), 0o644); err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}

	full := append(append([]byte{}, bytes.TrimSpace(c.Cert)...), '\n')
	full = append(full, c.Chain...)
	version, err := s.writeArchive(n, ArchiveVersion{Cert: c.Cert, Chain: c.Chain, Fullchain: full, Privkey: c.Key})
	if err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}
	if err := syncDir(s.archiveDir(n)); err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}

	// The renewal configuration goes first: it is what Find and List look
	// for, so a crash right after the swap must not leave a live certificate
	// that a restarted worker cannot see (and orders again).
	if _, err := os.Stat(s.confPath(n)); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(s.confPath(n), s.renewalConf(n, params), 0o644); err != nil {
			return Lineage{}, fmt.Errorf("save %s: %w", n, err)
		}
	}

	s.removeStaleStaging(n)
	if err := s.layout().makeLive(s.dir, n, version); err != nil {
		return Lineage{}, fmt.Errorf("save %s: %w", n, err)
	}

	s.step("done")
	l := s.load(n)
	if l.Err != nil {
		return l, fmt.Errorf("save %s: stored version %d is unreadable: %w", n, version, l.Err)
	}
	return l, nil
}

// checkIssued refuses a version that would be broken once live.
func checkIssued(c Issued) error {
	leaf, err := certcrypto.ParsePEMCertificate(c.Cert)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	key, err := certcrypto.ParsePEMPrivateKey(c.Key)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	if !samePublicKey(key, leaf) {
		return errors.New("the private key does not match the certificate")
	}
	if len(bytes.TrimSpace(c.Chain)) > 0 {
		if _, err := certcrypto.ParsePEMBundle(c.Chain); err != nil {
			return fmt.Errorf("chain: %w", err)
		}
	}
	return nil
}

// writeArchive writes the four files of the next free version and returns
// its number. Files are never overwritten: the version is claimed by linking
// certN.pem into place (cert is written first by every writer), so a second
// process saving the same lineage at the same moment moves on to N+1 instead
// of mixing its key with our certificate.
func (s *Store) writeArchive(n LineageName, v ArchiveVersion) (int, error) {
	version, err := s.nextVersion(n)
	if err != nil {
		return 0, err
	}
	// archive/<name> is opened confined to the store: a symlink planted
	// there that leads out of the store is refused, not written through.
	archive, err := openConfined(s.dir, filepath.Join("archive", string(n)))
	if err != nil {
		return 0, err
	}
	defer archive.Close()
	for ; ; version++ {
		created, err := writeExclusive(archive, archiveName("cert", version), v.Cert, archiveMode("cert"))
		if err != nil {
			return 0, err
		}
		if created {
			break
		}
	}
	s.step("archive:cert")
	for _, kind := range kinds[1:] {
		if err := writeAtomic(archive, archiveName(kind, version), v.file(kind), archiveMode(kind), true); err != nil {
			return 0, err
		}
		s.step("archive:" + kind)
	}
	return version, nil
}

// nextVersion is one more than any version number in the archive, including
// files a crashed Save left behind, so an archive file is never overwritten.
func (s *Store) nextVersion(n LineageName) (int, error) {
	entries, err := os.ReadDir(s.archiveDir(n))
	if err != nil {
		return 0, err
	}
	highest := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			// A temporary file of a crashed Save; a recent one may belong to
			// another process saving right now.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
				_ = os.Remove(filepath.Join(s.archiveDir(n), e.Name()))
			}
			continue
		}
		if m := archiveFileRE.FindStringSubmatch(e.Name()); m != nil {
			if v, _ := strconv.Atoi(m[2]); v > highest {
				highest = v
			}
		}
	}
	return highest + 1, nil
}

// layout is how the store writes: durably, private, as certbot does.
func (s *Store) layout() layoutWrite {
	return layoutWrite{sync: true, dirMode: 0o700, readme: true, step: s.step}
}

// removeStaleStaging removes the staging directories of n a crashed Save
// left behind.
func (s *Store) removeStaleStaging(n LineageName) {
	liveRoot := filepath.Join(s.dir, "live")
	entries, err := os.ReadDir(liveRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), stagingPrefix(n)); ok && stagingSuffixRE.MatchString(rest) {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
				_ = os.RemoveAll(filepath.Join(liveRoot, e.Name()))
			}
		}
	}
}

func writeIfMissing(path string, data []byte, mode os.FileMode) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return writeFileAtomic(path, data, mode)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func liveReadme(prefix string) string {
	return "This directory contains your keys and certificates.\n\n" +
		"`" + prefix + "privkey.pem`  : the private key for your certificate.\n" +
		"`" + prefix + "fullchain.pem`: the certificate file used in most server software.\n" +
		"`" + prefix + "chain.pem`    : used for OCSP stapling in Nginx >=1.3.7.\n" +
		"`" + prefix + "cert.pem`     : will break many server configurations, and should not be used\n" +
		"                 without reading further documentation (see link below).\n\n" +
		"WARNING: DO NOT MOVE OR RENAME THESE FILES!\n" +
		"         Certbot expects these files to remain in this location in order\n" +
		"         to function properly!\n\n" +
		"We recommend not moving these files. For more information, see the Certbot\n" +
		"User Guide at https://certbot.eff.org/docs/using.html#where-are-my-certificates.\n"
}
