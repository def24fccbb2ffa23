package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/certstore"
)

// Exit statuses of the contract.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// app is what a subcommand runs with.
type app struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	log    zerolog.Logger
	cfg    Configs
	args   []string // positional arguments, for commands that take them
}

// command is one subcommand of certmgr.
type command struct {
	name  string
	args  string // synopsis after the name
	short string
	long  string
	needs needs
	// positional is set for commands that take arguments after their flags
	// (store import DIR).
	positional bool
	// flags declares the subcommand's own flags on fs; they are read after
	// parsing, when run is called.
	flags func(fs *flag.FlagSet, a *app) func(a *app) error
}

func commands() []*command {
	return []*command{workerCommand(), issueCommand(), renewCommand(), regenCommand(), certificatesCommand(), verifyDNSCommand(),
		checkCommand(), agentCommand(), migrateCommand(), storeCommand()}
}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	global := flag.NewFlagSet("certmgr", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	a := &app{ctx: ctx, stdout: stdout, stderr: stderr, getenv: getenv}
	level, format := addLogFlags(global, getenv)
	help := global.Bool("help", false, "")
	global.BoolVar(help, "h", false, "")
	if err := global.Parse(args); err != nil {
		fmt.Fprintf(stderr, "certmgr: %v\n\n", err)
		usage(stderr)
		return exitUsage
	}
	rest := global.Args()
	if *help || len(rest) == 0 || rest[0] == "help" {
		if len(rest) > 1 {
			if c := find(rest[1]); c != nil {
				commandUsage(stdout, c)
				return exitOK
			}
		}
		usage(stdout)
		if len(rest) == 0 && !*help {
			return exitUsage
		}
		return exitOK
	}
	c := find(rest[0])
	if c == nil {
		fmt.Fprintf(stderr, "certmgr: unknown command %q\n\n", rest[0])
		usage(stderr)
		return exitUsage
	}

	fs := flag.NewFlagSet("certmgr "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	lvl2, fmt2 := addLogFlags(fs, func(string) string { return "" })
	fsHelp := fs.Bool("help", false, "")
	fs.BoolVar(fsHelp, "h", false, "")
	apply := c.flags(fs, a)
	if err := fs.Parse(rest[1:]); err != nil {
		fmt.Fprintf(stderr, "certmgr %s: %v\n\n", c.name, err)
		commandUsage(stderr, c)
		return exitUsage
	}
	if *fsHelp {
		commandUsage(stdout, c)
		return exitOK
	}
	a.args = fs.Args()
	if fs.NArg() > 0 && !c.positional {
		fmt.Fprintf(stderr, "certmgr %s: unexpected argument %q\n\n", c.name, fs.Arg(0))
		commandUsage(stderr, c)
		return exitUsage
	}
	if *lvl2 != "" {
		*level = *lvl2
	}
	if *fmt2 != "" {
		*format = *fmt2
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(stderr, "certmgr %s: %v\n", c.name, err)
		return exitUsage
	}
	a.log = log

	cfg, err := loadConfigs(getenv, c.needs)
	if err != nil {
		fmt.Fprintf(stderr, "certmgr %s: %s\n", c.name, strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return exitUsage
	}
	cfg.Logger = log
	a.cfg = cfg
	if err := apply(a); err != nil {
		var ce *ConfigError
		var ke *certstore.KeyError
		if errors.As(err, &ce) || errors.As(err, &ke) {
			fmt.Fprintf(stderr, "certmgr %s: %v\n", c.name, err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "certmgr %s: %v\n", c.name, err)
		return exitFailed
	}
	return exitOK
}

func addLogFlags(fs *flag.FlagSet, getenv func(string) string) (level, format *string) {
	level = fs.String("loglevel", getenv(EnvLogLevel), "")
	fs.StringVar(level, "l", getenv(EnvLogLevel), "")
	format = fs.String("log-format", getenv(EnvLogFormat), "")
	return level, format
}

func find(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `certmgr: TLS certificates for a SaaS's custom domains, driven by the Django app's Celery tasks.

Usage: certmgr [--loglevel LEVEL] [--log-format json|console] COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.short)
	}
	fmt.Fprint(w, `
Run 'certmgr COMMAND --help' for a command's flags.
Exit status: 0 done, 1 failed, 2 bad usage or configuration.

Environment (default in brackets):
`)
	for _, v := range Variables {
		fmt.Fprintf(w, "  %-27s %s [%s]\n", v.Name, strings.ReplaceAll(v.Doc, "`", ""), strings.ReplaceAll(v.defaultText("-"), "`", ""))
	}
}

func commandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: certmgr %s %s\n\n%s\n", c.name, c.args, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs, &app{getenv: func(string) string { return "" }})
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			return
		}
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		fmt.Fprintf(w, "  %-16s %s\n", name, f.Usage)
	})
	fmt.Fprintln(w, "  --loglevel LEVEL debug, info, warning, error, critical [$CERTMGR_LOGLEVEL, info]")
	fmt.Fprintln(w, "  --log-format F   json or console [$CERTMGR_LOG_FORMAT; console on a terminal]")
	if c.needs.db || c.needs.target {
		var req []string
		if c.needs.db {
			req = append(req, EnvDBURL)
		}
		if c.needs.target {
			req = append(req, EnvCNAMETarget)
		}
		fmt.Fprintf(w, "\nRequires %s; 'certmgr --help' lists every variable.\n", strings.Join(req, " and "))
	}
}

func main() {
	ctx, stop := signalContext()
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
