package tasks

import (
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
)

// Every key of every task result is snake_case, nested types included
// (nginxconf.Skipped once came out as Name/Kind/Reason). Each result is
// filled with non-zero values first, so omitempty hides no field.
func TestResultKeysAreSnakeCase(t *testing.T) {
	t.Parallel()
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	for _, tc := range []struct {
		desc   string
		result any
	}{
		{"issue", &IssueResult{}},
		{"regen", &RegenResult{}},
		{"remove", &RemoveResult{}},
		{"verify", &VerifyResult{}},
		{"renew", &RenewResult{}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			fill(reflect.ValueOf(tc.result).Elem())
			b, err := json.Marshal(tc.result)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			n := 0
			walkKeys(v, func(k string) {
				n++
				if !snake.MatchString(k) {
					t.Errorf("key %q is not snake_case in %s", k, b)
				}
			})
			if want := countFields(reflect.TypeOf(tc.result).Elem()); n < want {
				t.Errorf("%d keys in %s, want at least %d (one per field)", n, b, want)
			}
		})
	}
}

// fill sets every settable field to a non-zero value, slices to one element.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1)
	case reflect.Float64:
		v.SetFloat(1)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	}
}

// countFields counts the exported fields of t and of the structs it nests.
func countFields(t reflect.Type) int {
	switch t.Kind() {
	case reflect.Slice:
		return countFields(t.Elem())
	case reflect.Struct:
		n := 0
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() {
				n++
				n += countFields(f.Type)
			}
		}
		return n
	}
	return 0
}

func walkKeys(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			f(k)
			walkKeys(e, f)
		}
	case []any:
		for _, e := range v {
			walkKeys(e, f)
		}
	}
}
