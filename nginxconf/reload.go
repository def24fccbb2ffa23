package nginxconf

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Reloader makes running nginx load the live configuration. LocalReloader
// reloads this pod's nginx; package podreload reloads every pod.
type Reloader interface {
	Reload(ctx context.Context) error
}

// LocalReloader reloads this pod's nginx: by default `nginx -s reload` with
// the configured -c and -p under Config.Timeout, or with
// ReloadMethod=signal a SIGHUP straight to the master (see ReloadSignal).
// Either way it returns once the master has the signal; the master then
// reloads in the background and keeps the old configuration if the new one
// fails to load (Apply has proven it with nginx -t before).
type LocalReloader struct {
	cfg Config
}

var _ Reloader = (*LocalReloader)(nil)

// NewLocalReloader checks cfg and returns a LocalReloader.
func NewLocalReloader(cfg Config) (*LocalReloader, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("nginxconf config: %w", err)
	}
	return &LocalReloader{cfg: cfg}, nil
}

// Reload sends the reload signal. A timeout matches
// errors.Is(err, context.DeadlineExceeded) and says "timed out".
func (r *LocalReloader) Reload(ctx context.Context) error {
	if r.cfg.ReloadMethod == ReloadSignal {
		return r.signal(ctx)
	}
	var args []string
	if r.cfg.Prefix != "" {
		args = append(args, "-p", r.cfg.Prefix)
	}
	if r.cfg.MainConf != "" {
		args = append(args, "-c", r.cfg.MainConf)
	}
	if _, err := runNginx(ctx, r.cfg, append(args, "-s", "reload")...); err != nil {
		return fmt.Errorf("reload nginx: %w", err)
	}
	return nil
}

// Coalesce returns a Reloader that folds requests arriving together into as
// few reloads of r as keeps every caller correct: a caller whose request
// arrives while a reload runs waits for the next one (that reload may have
// read the configuration before the caller's change), and all callers that
// arrived during one reload share the next. Each caller gets the error of the
// reload that covered it; a caller whose ctx ends stops waiting.
func Coalesce(r Reloader) Reloader {
	return &coalescer{r: r}
}

type coalescer struct {
	r  Reloader
	mu sync.Mutex
	// running is true while a reload runs; next collects callers for the one
	// after it.
	running bool
	next    *round
	waiters int // callers inside Reload, for tests
}

func (c *coalescer) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiters
}

type round struct {
	done chan struct{}
	err  error
}

func (c *coalescer) Reload(ctx context.Context) error {
	c.mu.Lock()
	c.waiters++
	defer func() {
		c.mu.Lock()
		c.waiters--
		c.mu.Unlock()
	}()
	if c.next == nil {
		c.next = &round{done: make(chan struct{})}
	}
	rd := c.next
	if !c.running {
		c.running = true
		c.next = nil
		c.mu.Unlock()
		go c.run(ctx, rd)
	} else {
		c.mu.Unlock()
	}
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return fmt.Errorf("reload nginx: %w", ctx.Err())
	}
}

// run performs rd and then every round that gathered meanwhile. The reload
// runs on the context of the caller that started the round, without its
// cancellation: other callers share it.
func (c *coalescer) run(ctx context.Context, rd *round) {
	ctx = context.WithoutCancel(ctx)
	for rd != nil {
		rd.err = c.r.Reload(ctx)
		close(rd.done)
		c.mu.Lock()
		rd = c.next
		c.next = nil
		if rd == nil {
			c.running = false
		}
		c.mu.Unlock()
	}
}

// signal sends SIGHUP to the master named by the pid file.
func (r *LocalReloader) signal(ctx context.Context) error {
	pidFile, err := r.pidFile(ctx)
	if err != nil {
		return fmt.Errorf("reload nginx: %w", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("reload nginx: is nginx running? %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("reload nginx: pid file %s holds %q", pidFile, b)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.HasPrefix(string(cmdline), "nginx: master process") {
		return fmt.Errorf("reload nginx: process %d from %s is not an nginx master (stale pid file?)", pid, pidFile)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload nginx: signal master %d: %w", pid, err)
	}
	return nil
}

// pidFile finds the master's pid file as nginx -s does: the main
// configuration's `pid` directive, else the compiled-in --pid-path, relative
// to the prefix.
func (r *LocalReloader) pidFile(ctx context.Context) (string, error) {
	p, err := resolvePaths(ctx, r.cfg)
	if err != nil {
		return "", err
	}
	main, err := os.ReadFile(p.mainConf)
	if err != nil {
		return "", fmt.Errorf("read nginx main config: %w", err)
	}
	ds, err := directives(string(main))
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", p.mainConf, err)
	}
	pid := p.pidPath
	for _, d := range ds {
		if d.name == "pid" && len(d.args) == 1 && !d.block {
			pid = d.args[0]
			break
		}
	}
	if pid == "" {
		return "", fmt.Errorf("%s has no pid directive and nginx -V no --pid-path", p.mainConf)
	}
	return p.abs(pid), nil
}
