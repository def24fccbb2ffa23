package nginxconf

import (
	"maps"
	"regexp"
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
// exactly the names as server names, in every mode.
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
		for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
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
		for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
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

	var luaNames map[string]string
	if mode == CertModeLua {
		var lua []string
		out, lua = stripLuaBlocks(t, out)
		luaNames = luaData(t, lua)
	}
	ds, err := directives(string(out))
	if err != nil {
		t.Fatalf("%s: rendered file does not parse: %v\n%s", mode, err, out)
	}
	servers := 0
	var serverNames, mapped []string
	inMap := false // in the SNI map: its entries run until the next block
	for _, d := range ds {
		if d.block {
			inMap = false
		}
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
		case d.name == "map" && d.block && slices.Equal(d.args, []string{"$ssl_server_name", "$certmgr_lineage"}):
			inMap = true
		case inMap && d.name != "default":
			if len(d.args) != 1 {
				t.Fatalf("%s: map entry %s with %d values %q", mode, d.name, len(d.args), d.args)
			}
			mapped = append(mapped, d.name)
		}
	}
	// per-server: the 421 default server, the HTTP server and one per name,
	// each name in a server_name of its HTTPS and of the HTTP server.
	// variable: one HTTPS server for every name (the default), the HTTP
	// server; each name once in the SNI map and once in the HTTP server.
	// lua: the same, with each name once in the Lua data, to its lineage.
	want, wantNames := 2+len(names), 2
	switch mode {
	case CertModeVariable:
		want, wantNames = 2, 1
		slices.Sort(mapped)
		if len(names) > 0 && !slices.Equal(mapped, names) {
			t.Fatalf("%s: SNI map keys %q; want %q", mode, mapped, names)
		}
	case CertModeLua:
		want, wantNames = 2, 1
		wantLua := map[string]string{}
		for _, s := range SortSites(ss) {
			wantLua[string(s.Name)] = s.lineage()
		}
		if len(names) > 0 && !maps.Equal(luaNames, wantLua) {
			t.Fatalf("%s: Lua names %v; want %v", mode, luaNames, wantLua)
		}
	}
	if servers != want {
		t.Fatalf("%s: %d server blocks for %d names; want %d\n%s", mode, servers, len(names), want, out)
	}
	var each []string
	for _, n := range names {
		for range wantNames {
			each = append(each, n)
		}
	}
	slices.Sort(serverNames)
	if !slices.Equal(serverNames, each) {
		t.Fatalf("%s: server names %q; want each of %q %d times", mode, serverNames, names, wantNames)
	}
}

// stripLuaBlocks returns out without its *_by_lua_block blocks (Lua is not
// nginx syntax; the blocks end at a "}" line at their own indentation, as the
// renderer writes them), and the blocks' contents.
func stripLuaBlocks(t *testing.T, out []byte) ([]byte, []string) {
	t.Helper()
	var kept strings.Builder
	var blocks []string
	var cur *strings.Builder
	end := ""
	for line := range strings.Lines(string(out)) {
		if cur != nil {
			if line == end {
				blocks = append(blocks, cur.String())
				cur = nil
				continue
			}
			cur.WriteString(line)
			continue
		}
		trimmed := strings.TrimLeft(line, " ")
		if name, ok := strings.CutSuffix(trimmed, " {\n"); ok && strings.HasSuffix(name, "_by_lua_block") {
			cur, end = &strings.Builder{}, line[:len(line)-len(trimmed)]+"}\n"
			continue
		}
		kept.WriteString(line)
	}
	if cur != nil {
		t.Fatalf("lua: a Lua block does not end:\n%s", out)
	}
	return []byte(kept.String()), blocks
}

// luaLine is init_by_lua's pattern for a line of names, "(%S+) ?(%S*)\n" in
// Lua.
var luaLine = regexp.MustCompile(`(\S+) ?(\S*)\n`)

// luaData reads the names from the Lua blocks' long strings the way
// init_by_lua does, checking that each long string fits nginx's 4 KB
// configuration buffer and holds nothing but names and lineages.
func luaData(t *testing.T, blocks []string) map[string]string {
	t.Helper()
	got := map[string]string{}
	long := regexp.MustCompile(`(?s)add\[==\[\n(.*?)\]==\]`)
	for _, b := range blocks {
		for _, m := range long.FindAllStringSubmatch(b, -1) {
			data := m[1]
			if len(data) > luaChunk {
				t.Fatalf("lua: a long string of %d bytes; nginx reads at most %d", len(data), luaChunk)
			}
			if strings.Trim(data, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_ \n") != "" {
				t.Fatalf("lua: a long string holds other characters: %q", data)
			}
			for _, l := range luaLine.FindAllStringSubmatch(data, -1) {
				lineage := l[2]
				if lineage == "" {
					lineage = l[1]
				}
				if _, dup := got[l[1]]; dup {
					t.Fatalf("lua: %s listed twice", l[1])
				}
				got[l[1]] = lineage
			}
		}
	}
	return got
}
