package nginxconf

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// TestError is a candidate that `nginx -t` refused. Output is nginx's own
// message. The live file was not touched; the refused candidate is kept at
// RejectedPath for a person to read.
type TestError struct {
	Output       string
	RejectedPath string
}

func (e *TestError) Error() string {
	return fmt.Sprintf("nginx -t refused the new configuration (kept at %s): %s", e.RejectedPath, e.Output)
}

// Applier puts rendered configurations live, one at a time.
//
// Apply never exposes an unproven file at the live path, not even while it
// tests one: `nginx -t` runs on a temporary copy of the main configuration
// (written beside it, or into a mirror of its directory when that is
// read-only, so relative paths resolve the same) whose include of the live
// file reads the candidate instead. Only after it passes is the candidate
// renamed over the live file (atomic on one filesystem); the previous live
// file is kept as .<name>.last-good. Helper files beside the live file start
// with '.', so no include glob such as conf.d/*.conf or sites-enabled/* reads
// them. Callers in this and other processes are serialised by an flock on
// .<name>.lock.
type Applier struct {
	cfg Config
	log zerolog.Logger

	mu       sync.Mutex
	mainConf string    // resolved once
	info     NginxInfo // nginx -V, read with mainConf
	live     liveFile
	// forceMirror makes nginx -t use the mirror directory even when the
	// main configuration's directory is writable (tests).
	forceMirror bool
}

// NewApplier checks cfg and returns an Applier.
func NewApplier(cfg Config) (*Applier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("nginxconf config: %w", err)
	}
	return &Applier{cfg: cfg, log: cfg.Logger.With().Str("component", "nginxconf").Logger()}, nil
}

// Paths of the files Apply keeps beside the live file.
func (a *Applier) CandidatePath() string { return a.side("candidate") }
func (a *Applier) LastGoodPath() string  { return a.side("last-good") }
func (a *Applier) RejectedPath() string  { return a.side("rejected") }
func (a *Applier) lockPath() string      { return a.side("lock") }

func (a *Applier) side(suffix string) string {
	dir, base := filepath.Split(a.cfg.ConfPath)
	return filepath.Join(dir, "."+base+"."+suffix)
}

// Apply makes content the live configuration if `nginx -t` accepts it; see
// ApplyFunc.
func (a *Applier) Apply(ctx context.Context, content []byte) (changed bool, err error) {
	return a.ApplyFunc(ctx, func(w io.Writer) error {
		_, err := w.Write(content)
		return err
	})
}

// ApplyFunc makes what render writes the live configuration if `nginx -t`
// accepts it. render streams into the candidate file (never into memory);
// changed is false, and the live file is not touched, when the live file
// already holds the same bytes (compared by SHA-256, the live file's hash
// kept while its identity does not change). A refusal is a *TestError; the
// live file is then untouched. ApplyFunc does not reload nginx: the caller
// reloads when changed is true.
func (a *Applier) ApplyFunc(ctx context.Context, render func(w io.Writer) error) (changed bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	unlock, err := a.flock(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()

	live := a.cfg.ConfPath
	cand := a.CandidatePath()
	sum, size, err := writeCandidate(cand, render)
	if err != nil {
		os.Remove(cand)
		return false, err
	}
	liveSum, exists, err := a.liveSum(live)
	if err != nil {
		os.Remove(cand)
		return false, err
	}
	if exists && liveSum == sum {
		os.Remove(cand)
		return false, nil
	}
	if err := a.test(ctx, cand); err != nil {
		var te *TestError
		if errors.As(err, &te) {
			if rerr := os.Rename(cand, te.RejectedPath); rerr != nil {
				te.RejectedPath = cand
			}
		} else {
			os.Remove(cand)
		}
		return false, err
	}
	if exists {
		if err := a.keepLastGood(live); err != nil {
			os.Remove(cand)
			return false, err
		}
	}
	if err := os.Rename(cand, live); err != nil {
		os.Remove(cand)
		return false, fmt.Errorf("put nginx config live: %w", err)
	}
	syncDir(filepath.Dir(live))
	if id, err := statFile(live); err == nil {
		a.live = liveFile{id: id, sum: sum}
	}
	a.log.Info().Str("path", live).Int64("bytes", size).Msg("nginx config updated")
	return true, nil
}

// writeCandidate streams render into path (fsynced) and returns the
// SHA-256 and size of what it wrote.
func writeCandidate(path string, render func(w io.Writer) error) (sum [sha256.Size]byte, size int64, err error) {
	f, err := createNew(path, 0o644)
	if err != nil {
		return sum, 0, fmt.Errorf("write candidate nginx config: %w", err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := render(cw); err != nil {
		f.Close()
		return sum, 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return sum, 0, fmt.Errorf("write candidate nginx config: %w", err)
	}
	if err := f.Close(); err != nil {
		return sum, 0, fmt.Errorf("write candidate nginx config: %w", err)
	}
	h.Sum(sum[:0])
	return sum, cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// liveFile is the hash of the live file as Apply last saw it.
type liveFile struct {
	id  fileID
	sum [sha256.Size]byte
}

// liveSum returns the SHA-256 of the live file, read again only when its
// identity (device, inode, size, mtime) changed since Apply last wrote or
// read it.
func (a *Applier) liveSum(live string) (sum [sha256.Size]byte, exists bool, err error) {
	id, err := statFile(live)
	if errors.Is(err, fs.ErrNotExist) {
		return sum, false, nil
	}
	if err != nil {
		return sum, false, fmt.Errorf("read live nginx config: %w", err)
	}
	if a.live.id == id {
		return a.live.sum, true, nil
	}
	f, err := os.Open(live)
	if err != nil {
		return sum, false, fmt.Errorf("read live nginx config: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, false, fmt.Errorf("read live nginx config: %w", err)
	}
	h.Sum(sum[:0])
	a.live = liveFile{id: id, sum: sum}
	return sum, true, nil
}

func statFile(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// Test runs `nginx -t` with path read in place of the live file, so a caller
// can check a file without putting it live.
func (a *Applier) Test(ctx context.Context, path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.test(ctx, path)
}

func (a *Applier) test(ctx context.Context, candidate string) error {
	mainPath, err := a.resolveMainConf(ctx)
	if err != nil {
		return err
	}
	main, err := os.ReadFile(mainPath)
	if err != nil {
		return fmt.Errorf("read nginx main config: %w", err)
	}
	text, err := candidateMainConf(string(main), mainPath, filepath.Clean(a.cfg.ConfPath), candidate, filepath.Glob)
	if err != nil {
		return fmt.Errorf("prepare nginx -t: %w", err)
	}
	tmp, mirror, cleanup, err := a.writeTestMain(filepath.Dir(mainPath), text)
	if err != nil {
		return fmt.Errorf("prepare nginx -t: %w", err)
	}
	defer cleanup()
	out, err := runNginx(ctx, a.cfg, a.args(tmp, "-t", "-q")...)
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		out = strings.ReplaceAll(out, tmp, mainPath+" (with the candidate)")
		if mirror != "" {
			out = strings.ReplaceAll(out, mirror+"/", filepath.Dir(mainPath)+"/")
		}
		return &TestError{Output: out, RejectedPath: a.RejectedPath()}
	}
	return err
}

// writeTestMain writes the temporary main configuration where nginx resolves
// relative paths exactly as for the real one: beside it (nginx takes the
// directory of -c as the base of relative includes). When that directory is
// read-only (a ConfigMap, a read-only mount), it builds a mirror instead: a
// temporary directory with a symlink to every entry of the main
// configuration's directory, so relative paths resolve to the same files;
// only paths leading out of the directory with ".." differ. mirror is that
// directory, or "" when none was needed.
func (a *Applier) writeTestMain(dir, text string) (path, mirror string, cleanup func(), err error) {
	name := ".certmgr-test-" + randHex() + ".conf"
	if !a.forceMirror {
		path = filepath.Join(dir, name)
		err = writeNew(path, []byte(text))
		if err == nil {
			return path, "", func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EROFS) {
			return "", "", nil, err
		}
	}
	mirror, err = os.MkdirTemp("", "certmgr-nginx-test-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(mirror) } // removes the links, not their targets
	entries, err := os.ReadDir(dir)
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(mirror, e.Name())); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	path = filepath.Join(mirror, name)
	if err := writeNew(path, []byte(text)); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return path, mirror, cleanup, nil
}

func (a *Applier) args(mainConf string, extra ...string) []string {
	var args []string
	if a.cfg.Prefix != "" {
		args = append(args, "-p", a.cfg.Prefix)
	}
	if mainConf != "" {
		args = append(args, "-c", mainConf)
	}
	return append(args, extra...)
}

// nginxPaths are where the running nginx keeps its files, resolved as nginx
// does: the main configuration from -c or the compiled-in --conf-path,
// relative paths from -p or the compiled-in --prefix.
type nginxPaths struct {
	mainConf string
	prefix   string
	pidPath  string // compiled-in --pid-path, for a main conf without `pid`
	info     NginxInfo
}

func resolvePaths(ctx context.Context, cfg Config) (nginxPaths, error) {
	p := nginxPaths{mainConf: cfg.MainConf, prefix: cfg.Prefix}
	out, err := runNginx(ctx, cfg, "-V")
	if err != nil {
		return nginxPaths{}, fmt.Errorf("find nginx paths: %w", err)
	}
	p.info, err = ParseNginxV(out)
	if err != nil {
		return nginxPaths{}, fmt.Errorf("find nginx paths: %w", err)
	}
	if p.mainConf == "" {
		if p.info.ConfPath == "" {
			return nginxPaths{}, fmt.Errorf("find nginx main config: nginx -V shows no --conf-path; set NGINX_MAIN_CONF")
		}
		p.mainConf = p.info.ConfPath
	}
	p.prefix = cmp.Or(p.prefix, p.info.Prefix)
	p.pidPath = p.info.PidPath
	p.mainConf = p.abs(p.mainConf)
	if main, err := os.ReadFile(p.mainConf); err == nil {
		loads, taken := mainLua(string(main), filepath.Dir(p.mainConf), p.abs(cfg.ConfPath))
		p.info.Lua = p.info.Lua || loads
		p.info.LuaInitTaken = taken
	}
	return p, nil
}

func (p nginxPaths) abs(path string) string {
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.prefix, path)
	}
	return filepath.Clean(path)
}

// resolveMainConf returns the absolute main configuration path.
func (a *Applier) resolveMainConf(ctx context.Context) (string, error) {
	if a.mainConf != "" {
		return a.mainConf, nil
	}
	p, err := resolvePaths(ctx, a.cfg)
	if err != nil {
		return "", err
	}
	a.mainConf, a.info = p.mainConf, p.info
	return a.mainConf, nil
}

// Nginx returns what `nginx -V` says about the configured binary and the
// main configuration's path, read once.
func (a *Applier) Nginx(ctx context.Context) (NginxInfo, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	mainConf, err := a.resolveMainConf(ctx)
	return a.info, mainConf, err
}

func (a *Applier) keepLastGood(live string) error {
	tmp := a.side("last-good.tmp")
	os.Remove(tmp)
	if err := os.Link(live, tmp); err != nil {
		b, rerr := os.ReadFile(live)
		if rerr != nil {
			return fmt.Errorf("keep last good nginx config: %w", rerr)
		}
		if err := writeFileSync(tmp, b); err != nil {
			return fmt.Errorf("keep last good nginx config: %w", err)
		}
	}
	if err := os.Rename(tmp, a.LastGoodPath()); err != nil {
		return fmt.Errorf("keep last good nginx config: %w", err)
	}
	return nil
}

// flock takes the cross-process lock, giving up when ctx ends.
func (a *Applier) flock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(a.lockPath(), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock nginx config: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock nginx config: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock nginx config: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runNginx runs the nginx binary under cfg.Timeout and returns its combined
// output. A timeout is reported as such and matches
// errors.Is(err, context.DeadlineExceeded).
func runNginx(ctx context.Context, cfg Config, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Binary, args...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	name := "nginx " + strings.Join(args, " ")
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return text, fmt.Errorf("%s: timed out after %s: %w", name, cfg.Timeout, context.DeadlineExceeded)
		}
		return text, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return text, fmt.Errorf("%s: %w: %s", name, err, text)
		}
		return text, fmt.Errorf("%s: %w", name, err)
	}
	return text, nil
}

// createNew creates path afresh for writing, refusing to write through a
// symlink: conf.d is a volume other pods of the namespace may write to, and a
// link planted at one of certmgr's file names (the candidate, the markers)
// must not make certmgr overwrite the file it points to. An old file or link
// at path is removed first; O_EXCL then refuses anything re-planted meanwhile.
func createNew(path string, mode os.FileMode) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
}

func writeFileSync(path string, b []byte) error {
	f, err := createNew(path, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func randHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeNew writes a file that must not exist yet (never through a symlink).
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
