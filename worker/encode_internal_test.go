package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// The encoders that write bytes Python reads back are checked against
// Python itself (Debian's /usr/bin/python3, the one Celery runs on).
func pythonEval(t *testing.T, code string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

// pyJSON writes chord members as kombu's json.dumps does, so members from a
// Python worker and from certmgr are alike byte for byte.
func TestPyJSONMatchesPythonJSONDumps(t *testing.T) {
	t.Parallel()
	values := []string{
		`[1, "5f0c", "SUCCESS", 2]`,
		`[1, "id", "FAILURE", {"exc_type": "ValueError", "exc_message": ["b<a>d & 'q' \"dq\""], "exc_module": "builtins"}]`,
		`[1, "id", "SUCCESS", {"name": "caf\u00e9 \ud83d\ude00", "n": [1.5, -2, null, true, false], "nested": {"k": []}}]`,
	}
	for _, v := range values {
		var decoded any
		if err := json.Unmarshal([]byte(v), &decoded); err != nil {
			t.Fatal(err)
		}
		got, err := pyJSON(decoded)
		if err != nil {
			t.Fatal(err)
		}
		// Go sorts map keys: compare with Python's sorted-key dump of the same value.
		want := pythonSorted(t, v)
		if string(got) != want {
			t.Errorf("pyJSON(%s)\n got  %s\n want %s", v, got, want)
		}
	}
}

func pythonSorted(t *testing.T, v string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c",
		"import json,sys; print(json.dumps(json.loads(sys.argv[1]), sort_keys=True))", v).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

// Messages built for Task.retry's MaxRetriesExceededError render arguments
// as Python's repr() does.
func TestPyReprMatchesPython(t *testing.T) {
	t.Parallel()
	args := []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`"it's"`), json.RawMessage(`[true, null, 2.5, "a\nb"]`), json.RawMessage(`{"k": "v"}`)}
	got := pyReprArgs(args)
	want := pythonEval(t, `print(repr(tuple([1, "it's", [True, None, 2.5, "a\nb"], {"k": "v"}])))`)
	if got != want {
		t.Errorf("pyReprArgs = %s, want %s", got, want)
	}
	if got, want := pyReprArgs(args[:1]), "(1,)"; got != want {
		t.Errorf("one argument: %s, want %s", got, want)
	}
}

// A failure steered with SkipRetry (or after the last retry) reads as the
// task's own error: no "skip retry:" or "retry in" prefix reaches a person.
func TestStoredMessageHasNoSteeringPrefix(t *testing.T) {
	t.Parallel()
	cause := Fail("DNSNotVerified", errTest("shop.example.com has no CNAME"))
	for _, err := range []error{
		joinSteer(SkipRetry, cause),
		joinSteer(RetryAfter(0), cause),
	} {
		info := excInfo(err)
		if info.ExcType != "DNSNotVerified" || len(info.ExcMessage) != 1 || info.ExcMessage[0] != "shop.example.com has no CNAME" {
			t.Errorf("excInfo(%q) = %+v", err, info)
		}
		tb := traceback(&Task{Name: "t", ID: "i"}, err, info)
		if strings.Contains(tb, "skip retry") || strings.Contains(tb, "retry in") {
			t.Errorf("traceback carries a steering prefix:\n%s", tb)
		}
	}
}

func errTest(s string) error { return errors.New(s) }

func joinSteer(steer, cause error) error { return fmt.Errorf("%w: %w", steer, cause) }
