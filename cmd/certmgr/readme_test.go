package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README.md's configuration table from Variables")

const (
	readmePath   = "../../README.md"
	tableStart   = "<!-- configuration table: generated from cmd/certmgr/env.go; go test ./cmd/certmgr -run TestREADMEConfigurationTable -update -->\n"
	tableEnd     = "<!-- end of the configuration table -->\n"
	tableHeading = "| variable | default | meaning |\n|---|---|---|\n"
)

// configurationTable is the README's table, one row per Variable.
func configurationTable() string {
	var b strings.Builder
	b.WriteString(tableHeading)
	for _, v := range Variables {
		b.WriteString("| `" + v.Name + "` | " + v.defaultText("empty") + " | " + v.Doc + " |\n")
	}
	return b.String()
}

// The README's configuration table is Variables, generated: a variable added
// to the table without -update fails here.
func TestREADMEConfigurationTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, tableStart), strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers of the configuration table:\n%s%s", tableStart, tableEnd)
	}
	got, want := readme[i+len(tableStart):j], configurationTable()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(readmePath, []byte(readme[:i+len(tableStart)]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's configuration table is not Variables; run go test ./cmd/certmgr -run TestREADMEConfigurationTable -update\ngot:\n%s\nwant:\n%s", got, want)
}
