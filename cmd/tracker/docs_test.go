package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"unicode"

	"github.com/tracklink/tracklink/internal/config"

	"github.com/caarlos0/env/v11"
)

// TestDocumentedVariables keeps docs/configuration.md's reference and
// .env.example in step with the variables the program reads: every
// variable config.Load reads, and every env tag in the sources (wherever a
// component declares its config struct), has a row in each, and every row
// is one the program reads. A row's default, where the tag has one, is the
// first value in its default column.
func TestDocumentedVariables(t *testing.T) {
	known := config.KnownVars()
	tags := envTags(t)
	for name, where := range tags {
		if !known[name] {
			t.Errorf("%s: env tag %s is not read by config.Load (its struct is not part of Config)", where, name)
		}
	}
	for _, doc := range []struct {
		file string
		re   *regexp.Regexp
	}{
		{"../../docs/configuration.md", regexp.MustCompile("(?m)^\\| `(TRACKER_[A-Z0-9_]+)` \\| ([^|]*)\\|")},
		{"../../.env.example", regexp.MustCompile(`(?m)^(TRACKER_[A-Z0-9_]+)=(.*)$`)},
	} {
		b, err := os.ReadFile(doc.file)
		if err != nil {
			t.Fatal(err)
		}
		documented := map[string]string{}
		for _, m := range doc.re.FindAllStringSubmatch(string(b), -1) {
			if _, twice := documented[m[1]]; twice {
				t.Errorf("%s: %s twice", doc.file, m[1])
			}
			documented[m[1]] = m[2]
		}
		var missing, extra []string
		for k := range known {
			if _, ok := documented[k]; !ok {
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
		if strings.HasSuffix(doc.file, ".md") {
			// The default column: its first `value` is the tag's default.
			first := regexp.MustCompile("`([^`]*)`")
			for name, def := range envDefaults(t) {
				cell, ok := documented[name]
				if !ok || def == "" {
					continue
				}
				m := first.FindStringSubmatch(cell)
				if m == nil || m[1] != def {
					t.Errorf("%s: %s's default is %q in the code, the table says %q", doc.file, name, def, strings.TrimSpace(cell))
				}
			}
		}
	}
	if len(tags) < 50 {
		t.Fatalf("found only %d env tags in the sources: is the parser broken?", len(tags))
	}
}

// envTagRe matches an env tag and its default in a Go struct field.
var envTagRe = regexp.MustCompile(`env:"([A-Z0-9_]+)"(?:\s+envDefault:"([^"]*)")?`)

// envTags returns the TRACKER_ variables named by env tags in the
// program's sources (tests excluded), each with the file that names it.
func envTags(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, f := range sourceMatches(t, envTagRe) {
		out[config.EnvPrefix+name] = f
	}
	return out
}

// sourceMatches returns the first group of every match of re in the
// program's sources (tests excluded), each with the file it is in.
func sourceMatches(t *testing.T, re *regexp.Regexp) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range sourceFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = f
		}
	}
	return out
}

// envDefaults returns each variable's envDefault as its tag writes it.
func envDefaults(t *testing.T) map[string]string {
	t.Helper()
	params, err := env.GetFieldParamsWithOptions(&config.Config{}, env.Options{Prefix: config.EnvPrefix})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range params {
		out[p.Key] = p.DefaultValue
	}
	return out
}

// sourceFiles are the program's Go sources: internal/ and cmd/, without
// tests.
func sourceFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{"../../internal", "../../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// metricDefRe matches where the sources name a metric they register: the
// Name of a prometheus ...Opts, a NewDesc, or the link's counter helper
// c(name, help).
var metricDefRe = regexp.MustCompile(`(?:\bName:\s*|\bNewDesc\(\s*|\bc\(\s*)"((?:tracker|hub|admin)_[a-z0-9_]+)"`)

// definedMetrics are the metrics the program's sources define, each with
// the file that defines it.
func definedMetrics(t *testing.T) map[string]string {
	t.Helper()
	return sourceMatches(t, metricDefRe)
}

// TestDocumentedMetrics keeps docs/operations.md's list of metrics in step
// with the code: every metric the sources define has a row there, every
// row is a metric they define, and every tracker_, hub_ or admin_ name
// the docs mention anywhere is one of them.
func TestDocumentedMetrics(t *testing.T) {
	defined := definedMetrics(t)
	if len(defined) < 40 {
		t.Fatalf("found only %d metric definitions in the sources: is the parser broken?", len(defined))
	}
	// A quoted name of the sources that reads like a counter or a
	// histogram but is not found by metricDefRe is a metric defined in a
	// way this test does not read yet (registeredMetrics, the dashboard
	// test's looser list, also holds log keys such as hub_partitions).
	for name := range registeredMetrics(t) {
		if defined[name] == "" && (strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_seconds")) {
			t.Errorf("%s is quoted in the sources but not defined as metricDefRe reads definitions: teach it the new form", name)
		}
	}
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:tracker|hub|admin)_[a-z0-9_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		if rows[m[1]] {
			t.Errorf("docs/operations.md: %s twice", m[1])
		}
		rows[m[1]] = true
	}
	for name, where := range defined {
		if !rows[name] {
			t.Errorf("docs/operations.md has no row for %s (defined in %s)", name, where)
		}
	}
	for name := range rows {
		if defined[name] == "" {
			t.Errorf("docs/operations.md lists %s, which the code does not define", name)
		}
	}
	// Names in prose, on any page: each is a defined metric (a histogram's
	// _bucket, _sum and _count series count as their metric).
	pages, _ := filepath.Glob("../../docs/*.md")
	pages = append(pages, "../../README.md", "../../CHANGELOG.md")
	mention := regexp.MustCompile("`((?:tracker|hub|admin)_[a-z0-9_]+)(?:\\{[^`]*\\})?`")
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mention.FindAllStringSubmatch(string(b), -1) {
			name := m[1]
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if n := strings.TrimSuffix(name, suffix); n != name && defined[n] != "" {
					name = n
				}
			}
			if defined[name] == "" {
				t.Errorf("%s mentions %s, which the code does not define", filepath.Base(p), m[1])
			}
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
	got, unknown, err := config.Load(environ)
	if err != nil {
		t.Fatalf(".env.example does not load: %v", err)
	}
	if len(unknown) > 0 {
		t.Fatalf("unknown variables %v", unknown)
	}
	want, _, err := config.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf(".env.example values differ from the defaults:\n%+v\n%+v", got, want)
	}
}

// TestDocLinks: every relative link of README.md, CHANGELOG.md and
// docs/*.md names a file that exists and, with a #fragment, a heading of
// that page (as GitHub makes anchors of headings), so that moving a
// section cannot leave a link behind.
func TestDocLinks(t *testing.T) {
	pages, _ := filepath.Glob("../../docs/*.md")
	pages = append(pages, "../../README.md", "../../CHANGELOG.md")
	fenced := regexp.MustCompile("(?s)```.*?```")
	heading := regexp.MustCompile(`(?m)^#+ (.*)$`)
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchors := map[string]map[string]bool{}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		set := map[string]bool{}
		for _, m := range heading.FindAllStringSubmatch(fenced.ReplaceAllString(string(b), ""), -1) {
			set[headingAnchor(m[1])] = true
		}
		anchors[filepath.Clean(p)] = set
	}
	links := 0
	for _, p := range pages {
		b, _ := os.ReadFile(p)
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			path, frag, _ := strings.Cut(target, "#")
			file := filepath.Clean(p)
			if path != "" {
				file = filepath.Join(filepath.Dir(p), path)
			}
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s links to %s: no such file", filepath.Base(p), target)
				continue
			}
			if frag != "" && strings.HasSuffix(file, ".md") && !anchors[file][frag] {
				t.Errorf("%s links to %s: no such heading", filepath.Base(p), target)
			}
		}
	}
	if links < 20 {
		t.Fatalf("found only %d links: is the parser broken?", links)
	}
}

// headingAnchor is the anchor GitHub gives a heading: lower case, without
// markup and punctuation, spaces made hyphens.
func headingAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
