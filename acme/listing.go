package acme

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// CertificateInfo is one lineage as `certmgr certificates` shows it, in the
// terms certbot uses; it is also the --json form.
type CertificateInfo struct {
	Name            string    `json:"name"`
	Domains         []string  `json:"domains"`
	KeyType         string    `json:"key_type"` // ECDSA or RSA, as certbot prints it
	Serial          string    `json:"serial,omitempty"`
	NotAfter        time.Time `json:"not_after,omitzero"`
	Status          string    `json:"status"` // "VALID: 12 days", "INVALID: EXPIRED", "INVALID: <why>"
	Valid           bool      `json:"valid"`
	Broken          bool      `json:"broken"`
	Error           string    `json:"error,omitempty"`
	CertificatePath string    `json:"certificate_path"` // live fullchain.pem
	PrivateKeyPath  string    `json:"private_key_path"`
	RenewalDue      bool      `json:"renewal_due"`
	RenewAt         time.Time `json:"renew_at,omitzero"`
	RenewalSource   string    `json:"renewal_source"`
	RenewalReason   string    `json:"renewal_reason"`
	// RenewKeyType is the key type a renewal orders (ec256, rsa2048, ...).
	RenewKeyType string `json:"renew_key_type"`
	// Notes are settings of the renewal configuration certmgr does not follow.
	Notes []string `json:"notes"`
	// NoRow is set when the database was read and no custom domain row
	// names any of the certificate's domains (it is not renewed).
	NoRow bool `json:"no_row,omitempty"`
}

// Describe turns a status into what the listing shows at now.
func Describe(s Status, now time.Time) CertificateInfo {
	info := CertificateInfo{
		Name:            string(s.Name),
		Domains:         s.Domains,
		Serial:          s.Serial,
		NotAfter:        s.NotAfter,
		CertificatePath: s.Live.Fullchain,
		PrivateKeyPath:  s.Live.Privkey,
		RenewalDue:      s.Decision.Due,
		RenewAt:         s.Decision.RenewAt,
		RenewalSource:   s.Decision.Source,
		RenewalReason:   s.Decision.Reason,
		RenewKeyType:    string(s.RenewKeyType),
		Notes:           append([]string{}, s.Notes...),
	}
	if info.Domains == nil {
		info.Domains = []string{}
	}
	switch {
	case strings.HasPrefix(string(s.KeyType), "ec"):
		info.KeyType = "ECDSA"
	case strings.HasPrefix(string(s.KeyType), "rsa"):
		info.KeyType = "RSA"
	}
	switch {
	case s.Err != nil:
		info.Broken = true
		info.Error = s.Err.Error()
		info.Status = "INVALID: " + s.Err.Error()
	case !now.Before(s.NotAfter):
		info.Status = "INVALID: EXPIRED"
	default:
		info.Valid = true
		left := s.NotAfter.Sub(now)
		switch days := int(left / (24 * time.Hour)); {
		case days == 1:
			info.Status = "VALID: 1 day"
		case days < 1:
			info.Status = fmt.Sprintf("VALID: %d hour(s)", int(left/time.Hour))
		default:
			info.Status = fmt.Sprintf("VALID: %d days", days)
		}
	}
	return info
}

// WriteCertificates prints infos the way `certbot certificates` does, with a
// renewal line added to each.
func WriteCertificates(w io.Writer, infos []CertificateInfo) error {
	var b strings.Builder
	b.WriteString("- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -\n")
	if len(infos) == 0 {
		b.WriteString("No certificates found.\n")
	} else {
		b.WriteString("Found the following certs:\n")
	}
	for _, in := range infos {
		fmt.Fprintf(&b, "  Certificate Name: %s\n", in.Name)
		if in.Serial != "" {
			fmt.Fprintf(&b, "    Serial Number: %s\n", strings.TrimLeft(in.Serial, "0"))
		}
		if in.KeyType != "" {
			fmt.Fprintf(&b, "    Key Type: %s\n", in.KeyType)
		}
		fmt.Fprintf(&b, "    Domains: %s\n", strings.Join(in.Domains, " "))
		if in.NotAfter.IsZero() {
			fmt.Fprintf(&b, "    Expiry Date: (%s)\n", in.Status)
		} else {
			fmt.Fprintf(&b, "    Expiry Date: %s (%s)\n", in.NotAfter.UTC().Format("2006-01-02 15:04:05+00:00"), in.Status)
		}
		fmt.Fprintf(&b, "    Certificate Path: %s\n", in.CertificatePath)
		fmt.Fprintf(&b, "    Private Key Path: %s\n", in.PrivateKeyPath)
		if in.RenewalReason != "" {
			due := "not due"
			if in.RenewalDue {
				due = "due"
			}
			fmt.Fprintf(&b, "    Renewal: %s (%s)\n", due, in.RenewalReason)
		}
		if in.RenewKeyType != "" {
			fmt.Fprintf(&b, "    Renews with: %s key\n", in.RenewKeyType)
		}
		for _, n := range in.Notes {
			fmt.Fprintf(&b, "    Note: %s\n", n)
		}
		if in.NoRow {
			b.WriteString("    Rows: none (no custom domain row names these domains: it is not renewed)\n")
		}
	}
	b.WriteString("- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -\n")
	_, err := io.WriteString(w, b.String())
	return err
}
