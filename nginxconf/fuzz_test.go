package nginxconf

import (
	"slices"
	"strings"
	"testing"

	"github.com/midsummer/certmgr/domain"
)

var fuzzSeeds = []string{
	"shop.example.com\nevents.tenant-a.org",
	"a.example.com;\n}\nserver {\nlisten 80",
	"*.example.com,~^(.*)$,.example.com",
	"bücher.example,BÜCHER.example,xn--bcher-kva.example",
	"a.example.com\x00b.example.com, c.example.com\td.example.com",
	"$host.example.com,a'b.example.com,a\"b.example.com,a#b.example.com",
	"default_server,_,localhost,127.0.0.1,[::1]",
}

// splitNames turns fuzz input into candidate names.
func splitNames(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == ',' })
}

// FuzzRenderAccepted: names that package domain accepts always render, and
// the file has exactly one HTTPS server block per name (per-server mode) and
// exactly the names as server names, in both modes.
func FuzzRenderAccepted(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var ss []Site
		for _, raw := range splitNames(in) {
			if n, err := domain.Parse(raw); err == nil {
				ss = append(ss, Site{Domain: Domain{Name: n}})
			}
		}
		for _, mode := range []CertMode{CertModePerServer, CertModeVariable} {
			out, err := Render(Config{CertMode: mode}, ss)
			if err != nil {
				t.Fatalf("%s: Render refused names domain.Parse accepted: %v", mode, err)
			}
			checkStructure(t, mode, out, ss)
		}
	})
}

// FuzzRenderRaw: names that bypass package domain either make Render fail
// or render with the same structure: no name can add, remove or break a
// server block.
func FuzzRenderRaw(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var ss []Site
		for _, raw := range splitNames(in) {
			ss = append(ss, Site{Domain: Domain{Name: domain.Name(raw)}})
		}
		for _, mode := range []CertMode{CertModePerServer, CertModeVariable} {
			out, err := Render(Config{CertMode: mode}, ss)
			if err != nil {
				continue
			}
			checkStructure(t, mode, out, ss)
		}
	})
}

// checkStructure parses out with the nginx tokenizer and checks the server
// blocks and server names against the unique names of ss.
func checkStructure(t *testing.T, mode CertMode, out []byte, ss []Site) {
	t.Helper()
	var names []string
	for _, s := range ss {
		names = append(names, string(s.Name))
	}
	slices.Sort(names)
	names = slices.Compact(names)

	ds, err := directives(string(out))
	if err != nil {
		t.Fatalf("%s: rendered file does not parse: %v\n%s", mode, err, out)
	}
	servers := 0
	var serverNames []string
	for _, d := range ds {
		switch {
		case d.name == "server" && d.block:
			servers++
		case d.name == "server_name":
			if len(d.args) != 1 {
				t.Fatalf("%s: server_name with %d arguments %q", mode, len(d.args), d.args)
			}
			if d.args[0] != "_" {
				serverNames = append(serverNames, d.args[0])
			}
		}
	}
	want := 2 + len(names) // default 421 server, HTTP server, one per name
	if mode == CertModeVariable {
		want = 2
		if len(names) > 0 {
			want = 3
		}
	}
	if servers != want {
		t.Fatalf("%s: %d server blocks for %d names; want %d\n%s", mode, servers, len(names), want, out)
	}
	// Each name twice (HTTPS and HTTP), nothing else.
	var twice []string
	for _, n := range names {
		twice = append(twice, n, n)
	}
	slices.Sort(serverNames)
	if !slices.Equal(serverNames, twice) {
		t.Fatalf("%s: server names %q; want each of %q twice", mode, serverNames, names)
	}
}
