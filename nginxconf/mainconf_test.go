package nginxconf

import (
	"errors"
	"strings"
	"testing"
)

func TestCandidateMainConf(t *testing.T) {
	t.Parallel()
	const live, cand = "/etc/nginx/conf.d/custom-domains.conf", "/etc/nginx/conf.d/.custom-domains.conf.candidate"
	glob := func(files ...string) func(string) ([]string, error) {
		return func(string) ([]string, error) { return files, nil }
	}
	tests := []struct {
		desc    string
		main    string
		glob    func(string) ([]string, error)
		want    []string // substrings, in order
		notWant []string
		wantErr error
	}{
		{
			desc: "glob include beside other files keeps their order",
			main: "events {}\nhttp {\n    include mime.types;\n    include /etc/nginx/conf.d/*.conf;\n    include /etc/nginx/sites-enabled/*;\n}\n",
			glob: glob("/etc/nginx/conf.d/a.conf", live, "/etc/nginx/conf.d/z.conf", "/etc/nginx/conf.d/.hidden.conf"),
			want: []string{
				"include mime.types;",
				`include "/etc/nginx/conf.d/a.conf";`,
				`include "` + cand + `";`,
				`include "/etc/nginx/conf.d/z.conf";`,
				"include /etc/nginx/sites-enabled/*;",
			},
			notWant: []string{"include /etc/nginx/conf.d/*.conf", ".hidden.conf", `"` + live + `"`},
		},
		{
			desc: "first run: the live file does not exist yet",
			main: "http { include conf.d/*.conf; }",
			glob: glob("/etc/nginx/conf.d/b.conf"),
			want: []string{`include "/etc/nginx/conf.d/b.conf";`, `include "` + cand + `";`},
		},
		{
			desc: "the live file included by name, quoted",
			main: "http {\n  include \"/etc/nginx/conf.d/custom-domains.conf\"; # generated\n}\n",
			glob: glob(),
			want: []string{`include "` + cand + `";`, "# generated"},
		},
		{
			desc:    "an include in a comment does not count",
			main:    "# include conf.d/*.conf;\nhttp { include other/*.conf; }",
			glob:    glob(),
			wantErr: ErrNotIncluded,
		},
		{
			desc:    "a pattern that does not match the live file",
			main:    "http { include conf.d/*.inc; }",
			glob:    glob(),
			wantErr: ErrNotIncluded,
		},
		{
			desc: "variables with braces and quoted semicolons do not confuse the parser",
			main: "http { log_format x '${host};{' \"a;b\"; server { return 200 \"}\"; } include conf.d/*.conf; }",
			glob: glob(live),
			want: []string{`log_format x '${host};{' "a;b";`, `include "` + cand + `";`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := candidateMainConf(tc.main, "/etc/nginx/nginx.conf", live, cand, tc.glob)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v; want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("missing or out of order: %q in\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for _, nw := range tc.notWant {
				if strings.Contains(got, nw) {
					t.Errorf("unexpected %q in\n%s", nw, got)
				}
			}
			if _, err := directives(got); err != nil {
				t.Errorf("rewritten main conf does not parse: %v\n%s", err, got)
			}
		})
	}
}

func TestDirectivesRejectsBrokenSyntax(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"http {", "}", "a 'b;", "{ }", "http { a }"} {
		if _, err := directives(src); err == nil {
			t.Errorf("directives(%q) accepted broken syntax", src)
		}
	}
}

// platformLua is Lua a platform's own configuration may carry: braces inside
// comments, strings and long brackets, and statements without ';'.
const platformLua = `    init_worker_by_lua_block {
        -- a comment with a brace }
        --[==[ a long comment with } and ]] inside ]==]
        local s = "}" .. '{' .. "\"}" .. '\'}'
        local t = { [ [[k}]] ] = [=[ } ]] ]=], n = { 1, 2 } }
        platform_ready = s ~= nil and t ~= nil
    }
    lua_shared_dict platform_cache 1m;
`

func TestDirectivesSkipLuaBlocks(t *testing.T) {
	t.Parallel()
	src := "events {}\nhttp {\n" + platformLua +
		"    server { location /x { content_by_lua_block { ngx.say(\"}\") } } }\n" +
		"    include conf.d/*.conf;\n}\n"
	ds, err := directives(src)
	if err != nil {
		t.Fatalf("directives: %v", err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, strings.Repeat(">", d.depth)+d.name)
	}
	want := []string{"events", "http", ">init_worker_by_lua_block", ">lua_shared_dict", ">server", ">>location", ">>>content_by_lua_block", ">include"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("directives = %q; want %q", got, want)
	}
	// nginx would refuse these too.
	for _, bad := range []string{
		"http { content_by_lua_block { ngx.say('x) } }",
		"http { content_by_lua_block { --[[ never closed } }",
		"http { content_by_lua_block { local t = { } }",
	} {
		if _, err := directives(bad); err == nil {
			t.Errorf("directives(%q) accepted an unterminated Lua block", bad)
		}
	}
}
