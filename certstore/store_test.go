package certstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/internal/testpeers"
)

func TestMigrateOnceUnderConcurrentStarts(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctxT(t), pg.URL)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			v, err := Migrate(ctxT(t), c)
			if err == nil && v != SchemaVersion() {
				err = errors.New("migrated to " + strconv.Itoa(v))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT count(*) FROM certmgr_schema_migrations`).Scan(&n); err != nil || n != SchemaVersion() {
		t.Fatalf("migrations recorded: %d, %v", n, err)
	}
	// A store newer than the binary is refused.
	pg.Exec(t, `INSERT INTO certmgr_schema_migrations (version) VALUES ($1)`, SchemaVersion()+1)
	if _, err := Migrate(ctxT(t), pg.Conn(t)); err == nil || !strings.Contains(err.Error(), "newer than this certmgr") {
		t.Fatalf("migrate on a newer schema: %v", err)
	}
}

func TestPrivateKeysUnreadableWithoutTheKey(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	filesStore(t, ca, dir, map[string]int{"shop.example.com": 1})
	key := testpeers.StoreKey()
	s := openStore(t, pg.URL, key)
	if _, err := s.Import(ctxT(t), dir); err != nil {
		t.Fatal(err)
	}
	plainKey, err := os.ReadFile(filepath.Join(dir, "archive", "shop.example.com", "privkey1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// Everything the table holds, as the database's own text: no key material.
	var dump string
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT string_agg(v::text, E'\n') FROM certmgr_lineage_version v`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	body := strings.Join(strings.Split(string(plainKey), "\n")[1:3], "")
	if strings.Contains(dump, "PRIVATE KEY") || strings.Contains(dump, body[:40]) {
		t.Fatalf("the table holds the private key in clear:\n%s", dump)
	}
	var sealed []byte
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT privkey_sealed FROM certmgr_lineage_version`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plainKey[30:60]) {
		t.Fatal("sealed bytes hold the key")
	}
	// The key opens it.
	ls, err := s.Lineages(ctxT(t), LineageFilter{})
	if err != nil || len(ls) != 1 || !bytes.Equal(ls[0].Versions[0].Privkey, plainKey) {
		t.Fatalf("read back: %v, %v", ls, err)
	}
	// A row's sealed key copied into another row does not open there.
	pg.Exec(t, `INSERT INTO certmgr_lineage (name, domains, current_version, renewal_conf, changed_version)
		VALUES ('other.example.com', '{other.example.com}', 1, '', 0)`)
	pg.Exec(t, `INSERT INTO certmgr_lineage_version SELECT 'other.example.com', version, cert, chain, fullchain,
		privkey_key_id, privkey_sealed, serial, not_before, not_after, created_at FROM certmgr_lineage_version`)
	if _, err := s.Lineages(ctxT(t), LineageFilter{Names: []string{"other.example.com"}}); err == nil {
		t.Fatal("a sealed key moved to another lineage opened")
	}
}

func TestOpenRefusesMissingOrWrongKey(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	key := testpeers.StoreKey()
	openStore(t, pg.URL, key)
	for _, bad := range []string{"", testpeers.StoreKey()} {
		_, err := Open(ctxT(t), Config{URL: pg.URL, Key: bad})
		var ke *KeyError
		if !errors.As(err, &ke) {
			t.Fatalf("Open with key %q: %v, want a KeyError", bad, err)
		}
		t.Logf("refused: %v", err)
	}
}

func TestRotateKey(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	filesStore(t, ca, dir, map[string]int{"a.example.com": 2, "b.example.com": 1})
	if err := os.MkdirAll(filepath.Join(dir, "accounts", "acme.test", "directory", "abc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts", "acme.test", "directory", "abc", "private_key.json"), []byte(`{"k":"v"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	oldKey, newKey_ := testpeers.StoreKey(), testpeers.StoreKey()
	s := openStore(t, pg.URL, oldKey)
	if _, err := s.Import(ctxT(t), dir); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Lineages(ctxT(t), LineageFilter{AllVersions: true})

	// The new key alone does not open the store yet.
	if _, err := Open(ctxT(t), Config{URL: pg.URL, Key: newKey_}); err == nil {
		t.Fatal("the new key alone opened a store sealed with the old one")
	}
	both := openStore(t, pg.URL, newKey_+","+oldKey)
	n, err := both.RotateKey(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1+3+1 { // check value, three versions, one account file
		t.Errorf("re-sealed %d values, want 5", n)
	}
	if n, err := both.RotateKey(ctxT(t)); err != nil || n != 0 {
		t.Errorf("second rotation re-sealed %d, %v", n, err)
	}
	after := openStore(t, pg.URL, newKey_)
	got, err := after.Lineages(ctxT(t), LineageFilter{AllVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(before) || !bytes.Equal(got[0].Versions[1].Privkey, before[0].Versions[1].Privkey) {
		t.Fatal("keys changed across the rotation")
	}
	files, err := after.AccountFiles(ctxT(t))
	if err != nil || len(files) != 1 || string(files[0].Content) != `{"k":"v"}` {
		t.Fatalf("account files after rotation: %v, %v", files, err)
	}
	if _, err := Open(ctxT(t), Config{URL: pg.URL, Key: oldKey}); err == nil {
		t.Fatal("the old key still opens the store after the rotation")
	}
}

func TestImportExportRoundTripReadByCertbot(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	ca := newTestCA(t)
	src := t.TempDir()
	filesStore(t, ca, src, map[string]int{"a.example.com": 2, "b.example.com-0001": 1})
	// A lineage without a complete version is skipped and listed.
	if err := os.WriteFile(filepath.Join(src, "renewal", "broken.example.com.conf"), []byte("version = 2.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, pg.URL, testpeers.StoreKey())
	res, err := s.Import(ctxT(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Lineages, ",") != "a.example.com,b.example.com-0001" || len(res.Skipped) != 1 || res.Skipped[0].Name != "broken.example.com" {
		t.Fatalf("import: %+v", res)
	}
	// Again: nothing doubles.
	if _, err := s.Import(ctxT(t), src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if n, err := s.Export(ctxT(t), dst); err != nil || n != 2 {
		t.Fatalf("export: %d, %v", n, err)
	}
	for _, rel := range []string{
		"archive/a.example.com/cert1.pem", "archive/a.example.com/privkey2.pem", "archive/a.example.com/fullchain2.pem",
		"archive/b.example.com-0001/chain1.pem", "renewal/a.example.com.conf", "renewal/b.example.com-0001.conf",
		"live/a.example.com/privkey.pem", "live/b.example.com-0001/fullchain.pem",
	} {
		a, errA := os.ReadFile(filepath.Join(src, rel))
		b, errB := os.ReadFile(filepath.Join(dst, rel))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after export (%v, %v)", rel, errA, errB)
		}
	}
	if target, _ := os.Readlink(filepath.Join(dst, "live", "a.example.com", "cert.pem")); target != "../../archive/a.example.com/cert2.pem" {
		t.Errorf("live link %q", target)
	}
	if st, err := os.Stat(filepath.Join(dst, "archive", "a.example.com", "privkey2.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("exported key mode: %v %v", st, err)
	}
	out := certbotCertificates(t, dst)
	for _, want := range []string{"Certificate Name: a.example.com", "Certificate Name: b.example.com-0001", "Domains: b.example.com", "(VALID: "} {
		if !strings.Contains(out, want) {
			t.Errorf("certbot certificates lacks %q:\n%s", want, out)
		}
	}
}

func certbotCertificates(t *testing.T, dir string) string {
	t.Helper()
	bin, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("certbot missing: apt-get install certbot")
		}
		t.Skip("certbot missing")
	}
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "certificates", "--config-dir", dir,
		"--work-dir", filepath.Join(work, "work"), "--logs-dir", filepath.Join(work, "logs")).CombinedOutput()
	if err != nil {
		t.Fatalf("certbot certificates: %v\n%s", err, out)
	}
	return string(out)
}

func TestServedSetNotifiesOnChangeOnly(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	s := openStore(t, pg.URL, testpeers.StoreKey())
	l := pg.Conn(t)
	if _, err := l.Exec(ctxT(t), "LISTEN "+Channel); err != nil {
		t.Fatal(err)
	}
	schema, _ := s.Schema(ctxT(t))
	changed, v, err := s.SetServed(ctxT(t), []Served{{"a.example.com", "a.example.com"}, {"b.example.com", "b.example.com-0001"}})
	if err != nil || !changed {
		t.Fatalf("SetServed: %v %v", changed, err)
	}
	want := schema + " " + strconv.FormatInt(v, 10)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := l.WaitForNotification(ctx)
		cancel()
		if err != nil {
			t.Fatalf("no notification %q: %v", want, err)
		}
		if n.Payload == want {
			break
		}
	}
	changed, v2, err := s.SetServed(ctxT(t), []Served{{"b.example.com", "b.example.com-0001"}, {"a.example.com", "a.example.com"}})
	if err != nil || changed || v2 != v {
		t.Fatalf("same set again: changed=%v version %d→%d %v", changed, v, v2, err)
	}
	changed, v3, err := s.SetServed(ctxT(t), []Served{{"b.example.com", "b.example.com-0001"}})
	if err != nil || !changed || v3 != v+1 {
		t.Fatalf("removal: changed=%v version %d %v", changed, v3, err)
	}
	snap, err := s.Snapshot(ctxT(t))
	if err != nil || snap.Version != v3 || len(snap.Served) != 1 || snap.Served[0].Domain != "b.example.com" {
		t.Fatalf("snapshot %+v %v", snap, err)
	}
}

// AddIssued numbers a version another writer already took as the next free
// one and makes it current; a repeat of the same push changes nothing, even
// after the lineage moved on.
func TestAddIssuedRenumbersAndNeverMovesBack(t *testing.T) {
	t.Parallel()
	s := openStore(t, newPG(t).URL, testpeers.StoreKey())
	ca := newTestCA(t)
	ver := func(n int) Version {
		l := ca.Issue(t, testpeers.LeafOptions{Names: []string{"x.example.com"}})
		return Version{N: n, Cert: l.Cert, Chain: l.Chain, Fullchain: l.Fullchain(), Privkey: l.Key,
			Serial: l.X509.SerialNumber.Text(16), NotBefore: l.X509.NotBefore, NotAfter: l.X509.NotAfter}
	}
	lin := func(cur int, vs ...Version) Lineage {
		return Lineage{Name: "x.example.com", Domains: []string{"x.example.com"}, Current: cur, RenewalConf: "version = 2.1.0\n", Versions: vs}
	}
	current := func() string {
		t.Helper()
		ls, err := s.Lineages(ctxT(t), LineageFilter{Names: []string{"x.example.com"}})
		if err != nil || len(ls) != 1 {
			t.Fatalf("read: %v %v", ls, err)
		}
		return ls[0].Versions[0].Serial
	}
	v1, a2, b2 := ver(1), ver(2), ver(2)
	for _, step := range []struct {
		desc string
		l    Lineage
		want []int
		cur  string
	}{
		{desc: "new lineage", l: lin(1, v1), want: []int{1}, cur: v1.Serial},
		{desc: "worker A renews", l: lin(2, a2), want: []int{2}, cur: a2.Serial},
		{desc: "worker B renews as 2 too", l: lin(2, v1, b2), want: []int{1, 3}, cur: b2.Serial},
		{desc: "A repeats its push", l: lin(2, a2), want: []int{2}, cur: b2.Serial},
	} {
		got, _, err := s.AddIssued(ctxT(t), step.l)
		if err != nil {
			t.Fatalf("%s: %v", step.desc, err)
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("%s: stored as %v, want %v", step.desc, got, step.want)
		}
		if c := current(); c != step.cur {
			t.Errorf("%s: current %s, want %s", step.desc, c, step.cur)
		}
	}
}
