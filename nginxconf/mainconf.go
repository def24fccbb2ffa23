package nginxconf

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNotIncluded means the main configuration has no include directive that
// reads the generated file, so `nginx -t` could not prove a candidate.
var ErrNotIncluded = errors.New("main configuration does not include the generated file")

// token is one word of nginx configuration syntax, with its byte offsets.
type token struct {
	text       string // unquoted
	start, end int
	special    bool // one of { } ;
}

// tokenize splits nginx configuration text the way nginx's parser does:
// words separated by spaces, "{", "}" and ";" as tokens of their own, '#'
// comments at the start of a word, single- and double-quoted words with
// backslash escapes, and "${var}" kept inside a word.
func tokenize(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '{' || c == '}' || c == ';':
			toks = append(toks, token{text: string(c), start: i, end: i + 1, special: true})
			i++
			if c == '{' && opensLuaBlock(toks) {
				// The body is Lua, not nginx syntax (statements need no
				// ';'): skip it as lua-nginx-module reads it, up to the
				// '}' that closes it, which is tokenized next.
				end, err := skipLua(src, i)
				if err != nil {
					return nil, err
				}
				i = end
			}
		case c == '"' || c == '\'':
			start := i
			var b strings.Builder
			i++
			for {
				if i >= len(src) {
					return nil, fmt.Errorf("unterminated quoted string at byte %d", start)
				}
				if src[i] == '\\' && i+1 < len(src) {
					b.WriteByte(src[i+1])
					i += 2
					continue
				}
				if src[i] == c {
					i++
					break
				}
				b.WriteByte(src[i])
				i++
			}
			toks = append(toks, token{text: b.String(), start: start, end: i})
		default:
			start := i
			for i < len(src) {
				c := src[i]
				if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '}' {
					break
				}
				if c == '{' {
					if i > start && src[i-1] == '$' {
						for i < len(src) && src[i] != '}' {
							i++
						}
						i++
						continue
					}
					break
				}
				if c == '\\' && i+1 < len(src) {
					i += 2
					continue
				}
				i++
			}
			toks = append(toks, token{text: src[start:i], start: start, end: i})
		}
	}
	return toks, nil
}

// opensLuaBlock reports whether the "{" that ends toks opens a
// *_by_lua_block directive (content_by_lua_block, init_by_lua_block, …).
func opensLuaBlock(toks []token) bool {
	first := len(toks) - 1
	for first > 0 && !toks[first-1].special {
		first--
	}
	return first < len(toks)-1 && strings.HasSuffix(toks[first].text, "_by_lua_block")
}

// skipLua returns the offset of the "}" that closes a Lua block whose body
// starts at i: braces are counted outside Lua's strings ('…', "…" with
// backslash escapes, [[…]] and [==[…]==]) and comments (-- to the end of the
// line, --[[…]]), as lua-nginx-module's own reader does.
func skipLua(src string, i int) (int, error) {
	start, depth := i, 0
	// longBracket returns the level of a long bracket "[", "="*level, "["
	// at j, or -1.
	longBracket := func(j int) int {
		if j >= len(src) || src[j] != '[' {
			return -1
		}
		level := 0
		for j+1+level < len(src) && src[j+1+level] == '=' {
			level++
		}
		if j+1+level < len(src) && src[j+1+level] == '[' {
			return level
		}
		return -1
	}
	// closeLong returns the offset after the "]", "="*level, "]" that
	// closes a long bracket whose content starts at j.
	closeLong := func(j, level int) (int, error) {
		end := "]" + strings.Repeat("=", level) + "]"
		k := strings.Index(src[j:], end)
		if k < 0 {
			return 0, fmt.Errorf("unterminated Lua long string or comment in the Lua block at byte %d", start)
		}
		return j + k + len(end), nil
	}
	for i < len(src) {
		switch c := src[i]; {
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			if level := longBracket(i + 2); level >= 0 {
				end, err := closeLong(i+2+level+2, level)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			}
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '[' && longBracket(i) >= 0:
			level := longBracket(i)
			end, err := closeLong(i+level+2, level)
			if err != nil {
				return 0, err
			}
			i = end
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(src) && src[j] != c {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(src) {
				return 0, fmt.Errorf("unterminated Lua string at byte %d", i)
			}
			i = j + 1
		case c == '{':
			depth++
			i++
		case c == '}':
			if depth == 0 {
				return i, nil
			}
			depth--
			i++
		default:
			i++
		}
	}
	return 0, fmt.Errorf("unterminated Lua block starting at byte %d", start)
}

// directive is a parsed directive: its name, arguments and byte span
// (through its ';' or '{').
type directive struct {
	name       string
	args       []string
	start, end int
	block      bool
	depth      int // 0 in the main context
}

// directives lists every directive in src at any block depth, in order.
func directives(src string) ([]directive, error) {
	toks, err := tokenize(src)
	if err != nil {
		return nil, err
	}
	var out []directive
	var cur []token
	depth := 0
	for _, t := range toks {
		if !t.special {
			cur = append(cur, t)
			continue
		}
		switch t.text {
		case ";", "{":
			if len(cur) == 0 {
				return nil, fmt.Errorf("unexpected %q at byte %d", t.text, t.start)
			}
			d := directive{name: cur[0].text, start: cur[0].start, end: t.end, block: t.text == "{", depth: depth}
			for _, a := range cur[1:] {
				d.args = append(d.args, a.text)
			}
			out = append(out, d)
			cur = nil
			if t.text == "{" {
				depth++
			}
		case "}":
			if len(cur) != 0 {
				return nil, fmt.Errorf("unexpected \"}\" at byte %d", t.start)
			}
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unexpected \"}\" at byte %d", t.start)
			}
		}
	}
	if len(cur) != 0 || depth != 0 {
		return nil, errors.New("unexpected end of file")
	}
	return out, nil
}

// candidateMainConf returns the text of a main configuration (the one
// `nginx -t` proves a candidate with) equal to main
// (read from mainPath) except that every include directive that reads live
// reads candidate instead. Glob includes are expanded the way nginx expands
// them (sorted, hidden files skipped) with live listed in its place, so the
// candidate is read exactly where and when the live file would be. glob is
// filepath.Glob, injected for tests.
func candidateMainConf(main, mainPath, live, candidate string, glob func(string) ([]string, error)) (string, error) {
	ds, err := directives(main)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", mainPath, err)
	}
	confDir := filepath.Dir(mainPath)
	var b strings.Builder
	last, found := 0, false
	for _, d := range ds {
		if d.name != "include" || len(d.args) != 1 || d.block {
			continue
		}
		pattern := includePath(confDir, d.args[0])
		var files []string
		if !strings.ContainsAny(pattern, "*?[") {
			if filepath.Clean(pattern) != live {
				continue
			}
			files = []string{live}
		} else {
			if ok, err := filepath.Match(pattern, live); err != nil || !ok || hiddenMismatch(pattern, live) {
				continue
			}
			files, err = includeGlob(pattern, glob)
			if err != nil {
				return "", fmt.Errorf("expand include %s: %w", pattern, err)
			}
			if !slices.Contains(files, live) {
				files = append(files, live)
			}
			slices.Sort(files)
		}
		found = true
		b.WriteString(main[last:d.start])
		b.WriteString("# certmgr: this include, with the candidate in place of the live file\n")
		for _, f := range files {
			if f == live {
				f = candidate
			}
			b.WriteString("include " + quote(f) + ";\n")
		}
		last = d.end
	}
	if !found {
		return "", fmt.Errorf("%w: %s has no include matching %s (it must be included by the main file itself)", ErrNotIncluded, mainPath, live)
	}
	b.WriteString(main[last:])
	return b.String(), nil
}

// includePath is an include directive's pattern as nginx reads it: relative
// to dir, the main configuration's directory.
func includePath(dir, pattern string) string {
	if !filepath.IsAbs(pattern) {
		return filepath.Join(dir, pattern)
	}
	return pattern
}

// includeGlob expands an include pattern as nginx does (glob(3): hidden
// files only when the pattern names them); glob is filepath.Glob.
func includeGlob(pattern string, glob func(string) ([]string, error)) ([]string, error) {
	matches, err := glob(pattern)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, m := range matches {
		if !hiddenMismatch(pattern, m) {
			files = append(files, m)
		}
	}
	return files, nil
}

// hiddenMismatch reports whether glob(3) would skip path for pattern: a
// wildcard never matches a leading '.' of a file name, although
// filepath.Match lets it.
func hiddenMismatch(pattern, path string) bool {
	return strings.HasPrefix(filepath.Base(path), ".") && !strings.HasPrefix(filepath.Base(pattern), ".")
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
