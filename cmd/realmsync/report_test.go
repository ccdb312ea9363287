package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFaultReport keeps FAULTS.md current: every test it names exists in
// the package it names, and every fuzz target of the repository is in it.
func TestFaultReport(t *testing.T) {
	const root = "../.."
	doc, err := os.ReadFile(filepath.Join(root, "FAULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`([a-z][a-z/]*)\\.((?:Test|Fuzz)\\w+)`").FindAllStringSubmatch(string(doc), -1)
	if len(named) < 40 {
		t.Fatalf("FAULTS.md names %d tests; the pattern or the document broke", len(named))
	}
	listed := make(map[string]bool)
	for _, m := range named {
		pkg, name := m[1], m[2]
		listed[pkg+"."+name] = true
		files, _ := filepath.Glob(filepath.Join(root, pkg, "*_test.go"))
		found := false
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			found = found || strings.Contains(string(src), "\nfunc "+name+"(")
		}
		if !found {
			t.Errorf("FAULTS.md names %s.%s, which is not a test of %s", pkg, name, pkg)
		}
	}
	fuzz := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bench" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir // a module of its own, and hidden dirs
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fuzz.FindAllStringSubmatch(string(src), -1) {
			if !listed[filepath.ToSlash(rel)+"."+m[1]] {
				t.Errorf("fuzz target %s.%s is missing from FAULTS.md", filepath.ToSlash(rel), m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
