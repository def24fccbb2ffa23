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
	// webrootMap is the [[webroot_map]] subsection of [renewalparams]: the
	// webroot certbot used for each name.
	webrootMap map[string]string
}

// readRenewalConf parses the subset of configobj syntax certbot writes:
// "key = value" lines, # comments, [section] and [[subsection]] headers, values
// optionally in single or double quotes.
func readRenewalConf(path string) (renewalConf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return renewalConf{}, fmt.Errorf("read renewal configuration: %w", err)
	}
	c := renewalConf{top: map[string]string{}, params: map[string]string{}, webrootMap: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "[[") && strings.HasSuffix(line, "]]"):
			section = "subsection " + strings.TrimSpace(strings.Trim(line, "[]"))
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
		case "subsection webroot_map":
			c.webrootMap[key] = strings.TrimSuffix(value, ",")
		}
	}
	for _, k := range kinds {
		if c.top[k] == "" {
			return renewalConf{}, fmt.Errorf("renewal configuration %s lacks %q", path, k)
		}
	}
	return c, nil
}

// RenewalSettings are the [renewalparams] of a lineage's renewal
// configuration that decide how it is renewed, as certbot wrote them.
type RenewalSettings struct {
	// KeyType is the key certbot renews with (key_type, rsa_key_size,
	// elliptic_curve); "" when the configuration names none.
	KeyType KeyType
	// KeyTypeErr says why the key settings could not be used (a size or
	// curve certmgr does not issue); KeyType is then "".
	KeyTypeErr     error
	Server         string            // server
	PreferredChain string            // preferred_chain
	Authenticator  string            // authenticator
	WebrootPath    string            // webroot_path, its first entry
	WebrootMap     map[string]string // [[webroot_map]]: name -> webroot
}

// settings reads the renewal settings out of a parsed configuration.
func (c renewalConf) settings() RenewalSettings {
	rs := RenewalSettings{
		Server:         c.params["server"],
		PreferredChain: c.params["preferred_chain"],
		Authenticator:  c.params["authenticator"],
		WebrootMap:     c.webrootMap,
	}
	if wp, _, _ := strings.Cut(c.params["webroot_path"], ","); wp != "" {
		rs.WebrootPath = strings.TrimSpace(wp)
	}
	rs.KeyType, rs.KeyTypeErr = keyTypeFromConf(c.params["key_type"], c.params["rsa_key_size"], c.params["elliptic_curve"])
	return rs
}

// keyTypeFromConf maps certbot's key settings onto a KeyType. certbot's
// defaults apply to what is missing: rsa_key_size 2048, elliptic_curve
// secp256r1. No key_type at all (certbot before 1.10) gives "": the
// certificate's own key decides.
func keyTypeFromConf(keyType, rsaSize, curve string) (KeyType, error) {
	switch strings.ToLower(keyType) {
	case "":
		return "", nil
	case "rsa":
		switch rsaSize {
		case "", "2048":
			return RSA2048, nil
		case "3072":
			return RSA3072, nil
		case "4096":
			return RSA4096, nil
		}
		return "", fmt.Errorf("rsa_key_size = %s is not one certmgr issues (2048, 3072, 4096)", rsaSize)
	case "ecdsa":
		switch strings.ToLower(curve) {
		case "", "secp256r1", "p-256", "prime256v1":
			return EC256, nil
		case "secp384r1", "p-384":
			return EC384, nil
		}
		return "", fmt.Errorf("elliptic_curve = %s is not one certmgr issues (secp256r1, secp384r1)", curve)
	}
	return "", fmt.Errorf("key_type = %s is not one certmgr issues (rsa, ecdsa)", keyType)
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
