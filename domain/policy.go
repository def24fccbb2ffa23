package domain

import (
	"fmt"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Policy adds the platform's own rules to Parse: names the platform reserves, and
// names no public CA can issue for because they are under no public suffix.
// The zero Policy is Parse.
type Policy struct {
	// CNAMETarget is the host name tenants point their CNAME at
	// (CUSTOM_DOMAIN_CNAME_TARGET, e.g. "custom.midsummer.cloud"). Its registrable
	// domain (Public Suffix List: "midsummer.cloud") and everything under it is the
	// platform's zone. Empty: Policy.Parse is Parse.
	CNAMETarget string
	// ReservedZones are further zones no tenant may claim, nor any name under them
	// (CUSTOM_DOMAIN_RESERVED_ZONES: the platform's other domains, cluster names
	// such as "cluster.local"). Default none.
	ReservedZones []string
	// AllowPrivateSuffixes are suffixes outside the Public Suffix List that tenant
	// names may still end in (CUSTOM_DOMAIN_ALLOW_PRIVATE_SUFFIXES; tests list
	// "test"). Default none: "foo.corp" or "kubernetes.default.svc" are refused.
	AllowPrivateSuffixes []string
}

// Validate reports whether CNAMETarget, ReservedZones and AllowPrivateSuffixes are
// well-formed names.
func (p Policy) Validate() error {
	if p.CNAMETarget != "" {
		if _, err := Parse(p.CNAMETarget); err != nil {
			return fmt.Errorf("CNAME target: %w", err)
		}
	}
	for _, z := range p.ReservedZones {
		if r := shapeReason(zoneForm(z)); r != "" || zoneForm(z) == "" {
			return fmt.Errorf("reserved zone %q: %s", z, cmpReason(r))
		}
	}
	for _, s := range p.AllowPrivateSuffixes {
		if r := shapeReason(zoneForm(s)); r != "" || zoneForm(s) == "" {
			return fmt.Errorf("allowed private suffix %q: %s", s, cmpReason(r))
		}
	}
	return nil
}

func cmpReason(r string) string {
	if r == "" {
		return ReasonEmpty
	}
	return r
}

// zoneForm is a configured zone or suffix as names are compared: lower case,
// no leading or trailing dot.
func zoneForm(z string) string {
	return strings.Trim(asciiLower(strings.TrimSpace(z)), ".")
}

// Zone is the platform's own zone: the registrable domain of CNAMETarget ("" when
// there is no target or it is invalid). A target that is itself a public suffix
// entry's child ("custom.example.herokuapp.com") gives that entry's registrable
// domain ("example.herokuapp.com"), the part the platform controls.
func (p Policy) Zone() Name {
	t, err := Parse(p.CNAMETarget)
	if err != nil {
		return ""
	}
	z, err := publicsuffix.EffectiveTLDPlusOne(string(t))
	if err != nil {
		return t
	}
	return Name(z)
}

// under reports whether n is z or a name inside z.
func under(n Name, z string) bool {
	return string(n) == z || strings.HasSuffix(string(n), "."+z)
}

// Parse is Parse plus: not the CNAME target, nothing in the platform's zone or a
// reserved zone, not a public suffix itself, and under a public suffix (or an
// allowed private one).
func (p Policy) Parse(raw string) (Name, error) {
	n, err := Parse(raw)
	if err != nil || p.isZero() {
		return n, err
	}
	if p.CNAMETarget != "" {
		target, err := Parse(p.CNAMETarget)
		if err != nil {
			return "", fmt.Errorf("check %q against the platform: CNAME target: %w", raw, err)
		}
		if n == target {
			return reject(raw, ReasonTarget)
		}
		if under(n, string(p.Zone())) {
			return reject(raw, ReasonPlatformZone)
		}
	}
	for _, z := range p.ReservedZones {
		if under(n, zoneForm(z)) {
			return reject(raw, ReasonReservedZone)
		}
	}
	for _, s := range p.AllowPrivateSuffixes {
		if s = zoneForm(s); strings.HasSuffix(string(n), "."+s) {
			return n, nil
		}
	}
	suffix, icann := publicsuffix.PublicSuffix(string(n))
	if !icann && !strings.Contains(suffix, ".") {
		// The List's default rule: the last label is no known top-level domain.
		return reject(raw, ReasonPrivateSuffix)
	}
	if suffix == string(n) {
		return reject(raw, ReasonPublicSuffix)
	}
	return n, nil
}

func (p Policy) isZero() bool {
	return p.CNAMETarget == "" && len(p.ReservedZones) == 0 && len(p.AllowPrivateSuffixes) == 0
}
