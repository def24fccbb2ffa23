package acme

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNextAttemptSchedule(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc     string
		failures []time.Time
		want     time.Time
	}{
		{"never failed", nil, time.Time{}},
		{"one failure: 1 min", []time.Time{t0}, t0.Add(time.Minute)},
		{"two: 10 min", []time.Time{t0, t0.Add(time.Minute)}, t0.Add(11 * time.Minute)},
		{"three: 100 min", []time.Time{t0, t0.Add(1 * time.Minute), t0.Add(11 * time.Minute)}, t0.Add(111 * time.Minute)},
		{"four and more: a day", []time.Time{t0, t0.Add(1 * time.Minute), t0.Add(11 * time.Minute), t0.Add(111 * time.Minute)}, t0.Add(111*time.Minute + 24*time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, _ := nextAttempt(failureRecord{Failures: tc.failures}, t0)
			if !got.Equal(tc.want) {
				t.Errorf("next attempt %s, want %s", got, tc.want)
			}
		})
	}
	// Five failures in an hour (say, records from replicas with skewed
	// clocks): the sixth waits until the first is an hour old.
	five := []time.Time{t0, t0.Add(time.Second), t0.Add(2 * time.Second), t0.Add(3 * time.Second), t0.Add(4 * time.Second)}
	if got, _ := nextAttempt(failureRecord{Failures: five}, t0); got.Before(t0.Add(time.Hour)) {
		t.Errorf("sixth attempt allowed at %s, within the hour", got)
	}
}

func TestDescribeAndWriteCertificates(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	valid := Status{Lineage: Lineage{Name: "a.example.com", Domains: []string{"a.example.com"}, KeyType: EC256,
		Serial: "0abc", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(89*24*time.Hour + time.Hour),
		Live: Paths{Fullchain: "/le/live/a.example.com/fullchain.pem", Privkey: "/le/live/a.example.com/privkey.pem"}},
		Decision: Decision{Reason: "renews later"}}
	expired := Status{Lineage: Lineage{Name: "b.example.com", KeyType: RSA2048, NotAfter: now.Add(-time.Hour)}}
	broken := Status{Lineage: Lineage{Name: "c.example.com", Err: errors.New("privkey.pem does not match")}}

	infos := []CertificateInfo{Describe(valid, now), Describe(expired, now), Describe(broken, now)}
	if infos[0].Status != "VALID: 89 days" || !infos[0].Valid || infos[0].KeyType != "ECDSA" {
		t.Errorf("valid: %+v", infos[0])
	}
	if infos[1].Status != "INVALID: EXPIRED" || infos[1].Valid || infos[1].Broken || infos[1].KeyType != "RSA" {
		t.Errorf("expired: %+v", infos[1])
	}
	if !infos[2].Broken || !strings.HasPrefix(infos[2].Status, "INVALID: ") {
		t.Errorf("broken: %+v", infos[2])
	}
	var out bytes.Buffer
	if err := WriteCertificates(&out, infos); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  Certificate Name: a.example.com\n    Serial Number: abc\n    Key Type: ECDSA\n    Domains: a.example.com\n",
		"    Expiry Date: 2026-07-29 13:00:00+00:00 (VALID: 89 days)\n    Certificate Path: /le/live/a.example.com/fullchain.pem\n    Private Key Path: /le/live/a.example.com/privkey.pem\n",
		"(INVALID: EXPIRED)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("listing lacks %q:\n%s", want, out.String())
		}
	}
}
