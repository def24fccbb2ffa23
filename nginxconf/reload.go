package nginxconf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/rs/zerolog"
)

// LocalReloader reloads this pod's nginx: by default (ReloadAuto) a SIGHUP
// straight to the master when its pid is reachable (see ReloadSignal), else
// `nginx -s reload` with the configured -c and -p under Config.Timeout.
// Either way it returns once the master has the signal; the master then
// reloads in the background and keeps the old configuration if the new one
// fails to load (Apply has proven it with nginx -t before).
type LocalReloader struct {
	cfg Config
	log zerolog.Logger

	mu       sync.Mutex
	lastWay  string // "signal" or "command": how the last auto reload went, logged when it changes
	signals  int    // reloads done by signal (tests)
	commands int    // reloads done by nginx -s reload (tests)
}

// NewLocalReloader checks cfg and returns a LocalReloader.
func NewLocalReloader(cfg Config) (*LocalReloader, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("nginxconf config: %w", err)
	}
	return &LocalReloader{cfg: cfg, log: cfg.Logger.With().Str("component", "nginxconf").Logger()}, nil
}

// Reload sends the reload signal. A timeout matches
// errors.Is(err, context.DeadlineExceeded) and says "timed out".
func (r *LocalReloader) Reload(ctx context.Context) error {
	switch r.cfg.ReloadMethod {
	case ReloadSignal:
		return r.count(&r.signals, r.signal(ctx))
	case ReloadAuto:
		err := r.signal(ctx)
		if err == nil {
			r.way("signal", nil)
			return r.count(&r.signals, nil)
		}
		// Only a pid file certmgr cannot find or read sends it to the
		// command, whose own parse finds the pid file wherever the
		// configuration names it. A pid file naming a process that is not an
		// nginx master is refused: the command would signal it blindly.
		if !errors.Is(err, errNoPidFile) {
			return err
		}
		r.way("command", err)
	}
	return r.count(&r.commands, r.command(ctx))
}

func (r *LocalReloader) count(n *int, err error) error {
	if err == nil {
		r.mu.Lock()
		*n++
		r.mu.Unlock()
	}
	return err
}

// way logs how auto reloads nginx when that changes: by signal, or by
// command and why the master could not be signalled.
func (r *LocalReloader) way(way string, why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if way == r.lastWay {
		return
	}
	r.lastWay = way
	if why != nil {
		r.log.Warn().Str("reload_method", way).Err(why).Msg("nginx master not reachable by signal; reloading with nginx -s reload, which parses the whole configuration once more")
		return
	}
	r.log.Info().Str("reload_method", way).Msg("reloading nginx by SIGHUP to its master")
}

// command runs `nginx -s reload`.
func (r *LocalReloader) command(ctx context.Context) error {
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

// Coalesce returns a Coalescer that folds requests arriving together into as
// few calls of reload as keeps every caller correct: a caller whose request
// arrives while a reload runs waits for the next one (that reload may have
// read the configuration before the caller's change), and all callers that
// arrived during one reload share the next. Each caller gets the error of the
// reload that covered it; a caller whose ctx ends stops waiting. reload is
// LocalReloader.Reload, or a whole regenerate-and-reload round (package
// tasks).
func Coalesce(reload func(ctx context.Context) error) *Coalescer {
	return &Coalescer{reload: reload}
}

// Coalescer is what Coalesce returns. Its Reload has LocalReloader's shape,
// so it stands wherever this pod's reload is wanted.
type Coalescer struct {
	reload func(ctx context.Context) error
	mu     sync.Mutex
	// running is true while a reload runs; next collects callers for the one
	// after it.
	running bool
	next    *round
	waiters int // callers inside Reload, for tests
}

func (c *Coalescer) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiters
}

type round struct {
	done chan struct{}
	err  error
}

// Reload asks for a reload and waits for the one that covers the request.
func (c *Coalescer) Reload(ctx context.Context) error {
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
func (c *Coalescer) run(ctx context.Context, rd *round) {
	ctx = context.WithoutCancel(ctx)
	for rd != nil {
		rd.err = c.reload(ctx)
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

// errNoPidFile: the master's pid file could not be found or read.
var errNoPidFile = errors.New("no readable nginx pid file")

// signal sends SIGHUP to the master named by the pid file.
func (r *LocalReloader) signal(ctx context.Context) error {
	pidFile, err := r.pidFile(ctx)
	if err != nil {
		return fmt.Errorf("reload nginx: %w: %w", errNoPidFile, err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("reload nginx: %w: is nginx running? %w", errNoPidFile, err)
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

// PIDFile is the running master's pid file, found as `nginx -s` finds it.
func (r *LocalReloader) PIDFile(ctx context.Context) (string, error) { return r.pidFile(ctx) }

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
