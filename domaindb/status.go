package domaindb

import "fmt"

// Status is the row's status column.
type Status string

// The statuses of the contract.
const (
	StatusPending     Status = "pending"
	StatusDNSVerified Status = "dns_verified"
	StatusIssued      Status = "ssl_issued"
	StatusFailed      Status = "failed"
)

// ParseStatus returns the Status spelled s, or an error for anything else.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusPending, StatusDNSVerified, StatusIssued, StatusFailed:
		return st, nil
	}
	return "", fmt.Errorf("unknown custom domain status %q", s)
}

// Mode is the row's mode column: whose site the domain serves.
type Mode string

// The modes of the contract.
const (
	ModeEvent  Mode = "event"
	ModeTenant Mode = "tenant"
)

// ParseMode returns the Mode spelled s, or an error for anything else.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeEvent, ModeTenant:
		return m, nil
	}
	return "", fmt.Errorf("unknown custom domain mode %q", s)
}
