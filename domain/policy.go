package domain

import (
	"fmt"
	"strings"
)

// Policy adds the platform's own rules to Parse.
type Policy struct {
	// CNAMETarget is the host name tenants point their CNAME at
	// (CUSTOM_DOMAIN_CNAME_TARGET, e.g. "custom.midsummer.cloud"). Its parent domain is
	// the platform's zone. Empty: Policy.Parse is Parse.
	CNAMETarget string
}

// Validate reports whether CNAMETarget is itself a valid name.
func (p Policy) Validate() error {
	if p.CNAMETarget == "" {
		return nil
	}
	if _, err := Parse(p.CNAMETarget); err != nil {
		return fmt.Errorf("CNAME target: %w", err)
	}
	return nil
}

// Zone is the platform's own zone: the parent of CNAMETarget, or the target itself
// when it has only two labels ("" when there is no target or it is invalid).
func (p Policy) Zone() Name {
	t, err := Parse(p.CNAMETarget)
	if err != nil {
		return ""
	}
	if _, parent, ok := strings.Cut(string(t), "."); ok && strings.Contains(parent, ".") {
		return Name(parent)
	}
	return t
}

// Parse is Parse plus: not the CNAME target and nothing in the platform's zone.
func (p Policy) Parse(raw string) (Name, error) {
	n, err := Parse(raw)
	if err != nil || p.CNAMETarget == "" {
		return n, err
	}
	target, err := Parse(p.CNAMETarget)
	if err != nil {
		return "", fmt.Errorf("check %q against the platform: CNAME target: %w", raw, err)
	}
	if n == target {
		return reject(raw, ReasonTarget)
	}
	zone := p.Zone()
	if n == zone || strings.HasSuffix(string(n), "."+string(zone)) {
		return reject(raw, ReasonPlatformZone)
	}
	return n, nil
}
