package main

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestDocumentedVariables keeps docs/configuration.md's reference and
// .env.example in step with the variables the program reads.
func TestDocumentedVariables(t *testing.T) {
	known := knownVars()
	for _, doc := range []struct {
		file string
		re   *regexp.Regexp
	}{
		{"../../docs/configuration.md", regexp.MustCompile("(?m)^\\| `(TRACKER_[A-Z0-9_]+)` \\|")},
		{"../../.env.example", regexp.MustCompile(`(?m)^(TRACKER_[A-Z0-9_]+)=`)},
	} {
		b, err := os.ReadFile(doc.file)
		if err != nil {
			t.Fatal(err)
		}
		documented := map[string]bool{}
		for _, m := range doc.re.FindAllStringSubmatch(string(b), -1) {
			documented[m[1]] = true
		}
		var missing, extra []string
		for k := range known {
			if !documented[k] {
				missing = append(missing, k)
			}
		}
		for k := range documented {
			if !known[k] {
				extra = append(extra, k)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing) > 0 || len(extra) > 0 {
			t.Errorf("%s: undocumented %s; documented but not read %s", doc.file, strings.Join(missing, ", "), strings.Join(extra, ", "))
		}
	}
}

// TestEnvExampleDefaults: the values in .env.example are the defaults, and
// the file as a whole is a valid configuration.
func TestEnvExampleDefaults(t *testing.T) {
	b, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	var environ []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "TRACKER_") {
			environ = append(environ, line)
		}
	}
	got, unknown, err := loadConfig(environ)
	if err != nil {
		t.Fatalf(".env.example does not load: %v", err)
	}
	if len(unknown) > 0 {
		t.Fatalf("unknown variables %v", unknown)
	}
	want, _, err := loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf(".env.example values differ from the defaults:\n%+v\n%+v", got, want)
	}
}
