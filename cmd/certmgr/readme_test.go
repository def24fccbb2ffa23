package main

import (
	"os"
	"strings"
	"testing"
)

// The README's configuration table documents every variable the binary reads.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, v := range Variables {
		if !strings.Contains(readme, "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s", v.Name)
		}
	}
}
