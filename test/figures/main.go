// Command figures prints the code-size figures a refactor is judged by:
// function length (median, p90, max, in lines from func to closing brace)
// and the largest files, for berth's own code (not tests, not test/) and
// for its tests. Run from the module root:
//
//	go run ./test/figures
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

type file struct {
	path  string
	lines int
}

type figures struct {
	funcs []int
	files []file
}

func main() {
	var code, tests figures
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f := &code
		if strings.HasSuffix(path, "_test.go") || strings.HasPrefix(path, "test"+string(filepath.Separator)) {
			f = &tests
		}
		return f.add(path)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "figures:", err)
		os.Exit(1)
	}
	code.print("code (no tests, nothing under test/)")
	tests.print("tests (_test.go and test/)")
}

func (f *figures) add(path string) error {
	fset := token.NewFileSet()
	af, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		return err
	}
	f.files = append(f.files, file{path, fset.File(af.Pos()).LineCount()})
	for _, d := range af.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Body != nil {
			f.funcs = append(f.funcs, fset.Position(fn.End()).Line-fset.Position(fn.Pos()).Line+1)
		}
	}
	return nil
}

func (f *figures) print(what string) {
	slices.Sort(f.funcs)
	slices.SortFunc(f.files, func(a, b file) int { return b.lines - a.lines })
	pct := func(p int) int { return f.funcs[(len(f.funcs)-1)*p/100] }
	fmt.Printf("%s: %d files, %d functions: median %d lines, p90 %d, max %d\n",
		what, len(f.files), len(f.funcs), pct(50), pct(90), f.funcs[len(f.funcs)-1])
	for _, fl := range f.files[:min(5, len(f.files))] {
		fmt.Printf("  %5d %s\n", fl.lines, fl.path)
	}
}
