package tasks

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestThousands(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "0", 40: "40", 999: "999", 1000: "1,000", 3300: "3,300", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// A long sweep logs its start, then "N of M" every progressEvery lineages.
func TestSweepProgressLines(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := &Service{log: zerolog.New(&buf)}
	progress := s.sweepProgress(3300, false)
	for i := range 3300 {
		progress(i)
	}
	out := buf.String()
	if !strings.Contains(out, `"message":"renewal sweep started"`) || !strings.Contains(out, `"lineages":3300`) {
		t.Errorf("no start line:\n%s", out)
	}
	for _, want := range []string{"renewal sweep: 500 of 3,300", "renewal sweep: 3,000 of 3,300"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q line:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 1+6 {
		t.Errorf("%d lines for 3,300 fast lineages, want the start and 6 progress lines:\n%s", n, out)
	}
}
