package acme

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// renewalConf is what certmgr reads from a certbot renewal configuration: the
// top-level entries and the [renewalparams] section. Everything else is left to
// certbot.
type renewalConf struct {
	top    map[string]string
	params map[string]string
}

// readRenewalConf parses the subset of configobj syntax certbot writes:
// "key = value" lines, # comments, [section] and [[subsection]] headers, values
// optionally in single or double quotes.
func readRenewalConf(path string) (renewalConf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return renewalConf{}, fmt.Errorf("read renewal configuration: %w", err)
	}
	c := renewalConf{top: map[string]string{}, params: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "[[") && strings.HasSuffix(line, "]]"):
			section = "subsection " + line // not read
			continue
		case strings.HasPrefix(line, "["):
			section = strings.TrimSpace(strings.Trim(line, "[]"))
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return renewalConf{}, fmt.Errorf("parse %s: line %q is not key = value", path, line)
		}
		key, value = strings.TrimSpace(key), unquoteConf(strings.TrimSpace(value))
		switch section {
		case "":
			c.top[key] = value
		case "renewalparams":
			c.params[key] = value
		}
	}
	for _, k := range kinds {
		if c.top[k] == "" {
			return renewalConf{}, fmt.Errorf("renewal configuration %s lacks %q", path, k)
		}
	}
	return c, nil
}

func unquoteConf(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
		if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
			return v[1 : end+1]
		}
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v
}

// quoteConf quotes a value when configobj would otherwise misread it.
func quoteConf(v string) string {
	if v == "" || strings.ContainsAny(v, "#,'\"\n[]=") || strings.TrimSpace(v) != v {
		if !strings.Contains(v, `"`) {
			return `"` + v + `"`
		}
		return `'` + v + `'`
	}
	return v
}

// renewalConf writes renewal/<name>.conf as certbot 2.1.0 would for a webroot
// lineage, with absolute paths under the store as certbot requires.
func (s *Store) renewalConf(n LineageName, p RenewalParams) []byte {
	dir, err := filepath.Abs(s.dir)
	if err != nil {
		dir = s.dir
	}
	live := filepath.Join(dir, "live", string(n))
	var b strings.Builder
	b.WriteString("# renew_before_expiry = 30 days\n")
	b.WriteString("# Written by certmgr, which renews this lineage; certbot can read it.\n")
	fmt.Fprintf(&b, "version = %s\n", certbotVersion)
	fmt.Fprintf(&b, "archive_dir = %s\n", quoteConf(filepath.Join(dir, "archive", string(n))))
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(filepath.Join(live, k+".pem")))
	}
	b.WriteString("\n# Options used in the renewal process\n[renewalparams]\n")
	if p.Account != "" {
		fmt.Fprintf(&b, "account = %s\n", quoteConf(p.Account))
	}
	b.WriteString("authenticator = webroot\n")
	if p.Webroot != "" {
		// A trailing comma makes a one-element list, as certbot writes it.
		fmt.Fprintf(&b, "webroot_path = %s,\n", quoteConf(p.Webroot))
	}
	if p.Server != "" {
		fmt.Fprintf(&b, "server = %s\n", quoteConf(p.Server))
	}
	for _, kv := range cmpKeyType(p.KeyType).certbotParams() {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	if p.Webroot != "" && len(p.Domains) > 0 {
		b.WriteString("[[webroot_map]]\n")
		for _, d := range p.Domains {
			fmt.Fprintf(&b, "%s = %s\n", d, quoteConf(p.Webroot))
		}
	}
	return []byte(b.String())
}

func cmpKeyType(k KeyType) KeyType {
	if k == "" {
		return DefaultKeyType
	}
	return k
}
