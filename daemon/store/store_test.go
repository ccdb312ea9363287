package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/realmsync/realmsync/crdt"
)

// backend opens an empty Store of one kind; reopen closes it and opens it
// again from what it holds, or returns nil when the kind cannot.
type backend struct {
	name string
	open func(t *testing.T) (s *Store, reopen func() *Store)
}

var backends = []backend{
	{"pebble", func(t *testing.T) (*Store, func() *Store) {
		dir := t.TempDir()
		s := mustOpen(t, dir, Options{NoSync: true})
		return s, func() *Store {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, Options{NoSync: true})
			return s
		}
	}},
	{"memory", func(t *testing.T) (*Store, func() *Store) {
		s := OpenMemory()
		t.Cleanup(func() { s.Close() })
		return s, func() *Store { return nil }
	}},
}

func mustOpen(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// batch reads a batch written as "k=v" (put; v may be empty) and "-k"
// (delete).
func batch(spec ...string) *crdt.Batch {
	b := crdt.NewBatch()
	for _, s := range spec {
		if k, ok := strings.CutPrefix(s, "-"); ok {
			b.Delete(k)
			continue
		}
		k, v, _ := strings.Cut(s, "=")
		b.Put(k, []byte(v))
	}
	return b
}

// gate holds every sync of a Store until the test lets it go.
type gate struct {
	entered chan struct{} // a sync is waiting
	proceed chan struct{} // lets one sync go on
}

// hold makes every later sync of s wait at a gate. Call it before the
// first Queue of the test.
func hold(s *Store) *gate {
	g := &gate{entered: make(chan struct{}), proceed: make(chan struct{})}
	sync := s.sync
	s.sync = func() error {
		g.entered <- struct{}{}
		<-g.proceed
		return sync()
	}
	return g
}

func submit(t *testing.T, s *Store, spec []string) *Pending {
	t.Helper()
	p, err := s.Queue(batch(spec...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func await(t *testing.T, p *Pending) {
	t.Helper()
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type scanCase struct {
	prefix, start string
	limit         int // 0: no limit
	want          []string
}

const absent = "<absent>"

// readCase is what Get and Scan must show once the batches of disk have
// been committed and those of flight queued, whatever part of flight has
// been synced.
type readCase struct {
	name   string
	disk   [][]string
	flight [][]string
	gets   map[string]string // key: value, or absent
	scans  []scanCase
}

var readCases = []readCase{{
	name: "committed put",
	disk: [][]string{{"a=1", "b=2"}},
	gets: map[string]string{"a": "1", "b": "2", "c": absent},
}, {
	name:   "in-flight put overrides disk",
	disk:   [][]string{{"a=1"}},
	flight: [][]string{{"a=2"}},
	gets:   map[string]string{"a": "2"},
	scans:  []scanCase{{"", "", 0, []string{"a=2"}}},
}, {
	name:   "in-flight delete hides disk",
	disk:   [][]string{{"a=1", "b=1"}},
	flight: [][]string{{"-a"}},
	gets:   map[string]string{"a": absent, "b": "1"},
	scans:  []scanCase{{"", "", 0, []string{"b=1"}}},
}, {
	name:   "delete of an absent key",
	flight: [][]string{{"-a", "b=1"}},
	gets:   map[string]string{"a": absent},
	scans:  []scanCase{{"", "", 0, []string{"b=1"}}},
}, {
	name:  "deleted on disk",
	disk:  [][]string{{"a=1", "b=1"}, {"-a"}},
	gets:  map[string]string{"a": absent},
	scans: []scanCase{{"", "", 0, []string{"b=1"}}},
}, {
	name:   "newest of several in-flight writes wins",
	flight: [][]string{{"a=1", "b=1"}, {"a=2"}, {"a=3", "-b"}},
	gets:   map[string]string{"a": "3", "b": absent},
	scans:  []scanCase{{"", "", 0, []string{"a=3"}}},
}, {
	name:   "older batch synced keeps a newer delete",
	flight: [][]string{{"a=1"}, {"-a"}},
	gets:   map[string]string{"a": absent},
	scans:  []scanCase{{"", "", 0, nil}},
}, {
	name:   "put after in-flight delete",
	disk:   [][]string{{"a=1"}},
	flight: [][]string{{"-a"}, {"a=2"}},
	gets:   map[string]string{"a": "2"},
}, {
	name:   "empty value is not a delete",
	flight: [][]string{{"a="}},
	gets:   map[string]string{"a": ""},
	scans:  []scanCase{{"", "", 0, []string{"a="}}},
}, {
	name:   "scan merges overlay and disk in order",
	disk:   [][]string{{"r/1=d", "r/3=d", "r/5=d"}},
	flight: [][]string{{"r/2=o", "-r/3", "r/4=o"}, {"r/6=o"}},
	scans: []scanCase{
		{"r/", "", 0, []string{"r/1=d", "r/2=o", "r/4=o", "r/5=d", "r/6=o"}},
		{"r/", "r/3", 0, []string{"r/4=o", "r/5=d", "r/6=o"}},
		{"r/", "r/2", 2, []string{"r/2=o", "r/4=o"}},
		{"r/", "r/1", 1, []string{"r/1=d"}},
	},
}, {
	name: "scan start outside the prefix",
	disk: [][]string{{"a=0", "r/1=1", "r/2=2", "s=0"}},
	scans: []scanCase{
		{"r/", "a", 0, []string{"r/1=1", "r/2=2"}},
		{"r/", "r0", 0, nil},
		{"r/", "r/1\x00", 0, []string{"r/2=2"}},
	},
}, {
	name:   "prefix is not a path segment",
	disk:   [][]string{{"r/a=1", "r/ab=2", "r/b=3", "ra=4", "realms/x="}},
	flight: [][]string{{"r/aa=5"}},
	scans: []scanCase{
		{"r/a", "", 0, []string{"r/a=1", "r/aa=5", "r/ab=2"}},
		{"r", "", 0, []string{"r/a=1", "r/aa=5", "r/ab=2", "r/b=3", "ra=4", "realms/x="}},
		{"realms/", "", 0, []string{"realms/x="}},
		{"", "r/b", 0, []string{"r/b=3", "ra=4", "realms/x="}},
	},
}}

// TestReads checks Get and Scan while batches wait for their sync, after
// the first is synced, after all are, and after reopening.
func TestReads(t *testing.T) {
	for _, be := range backends {
		for _, tc := range readCases {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				s, reopen := be.open(t)
				for _, b := range tc.disk {
					await(t, submit(t, s, b))
				}
				if len(tc.flight) == 0 {
					checkReads(t, s, tc, "on disk")
				}
				runFlight(t, s, tc)
				if s = reopen(); s != nil {
					checkReads(t, s, tc, "after reopen")
				}
			})
		}
	}
}

// runFlight queues tc.flight with its first batch alone in the syncer's
// hands, and checks the reads at each step.
func runFlight(t *testing.T, s *Store, tc readCase) {
	if len(tc.flight) == 0 {
		return
	}
	g := hold(s)
	first := submit(t, s, tc.flight[0])
	<-g.entered
	var rest []*Pending
	for _, b := range tc.flight[1:] {
		rest = append(rest, submit(t, s, b))
	}
	checkReads(t, s, tc, "all in flight")

	g.proceed <- struct{}{}
	await(t, first)
	if len(rest) > 0 {
		<-g.entered
		checkReads(t, s, tc, "first synced")
		g.proceed <- struct{}{}
		for _, p := range rest {
			await(t, p)
		}
	}
	checkReads(t, s, tc, "all synced")
}

func checkReads(t *testing.T, s *Store, tc readCase, when string) {
	t.Helper()
	for k, want := range tc.gets {
		got, err := s.Get(k)
		switch {
		case want == absent && !errors.Is(err, crdt.ErrNotFound):
			t.Errorf("%s: Get(%q) = %q, %v; want ErrNotFound", when, k, got, err)
		case want != absent && (err != nil || string(got) != want):
			t.Errorf("%s: Get(%q) = %q, %v; want %q", when, k, got, err, want)
		}
	}
	for _, sc := range tc.scans {
		got := scanAll(t, s, sc.prefix, sc.start, sc.limit)
		if !slices.Equal(got, sc.want) {
			t.Errorf("%s: Scan(%q, %q) limit %d = %q; want %q",
				when, sc.prefix, sc.start, sc.limit, got, sc.want)
		}
	}
}

func scanAll(t *testing.T, s *Store, prefix, start string, limit int) []string {
	t.Helper()
	var got []string
	err := s.Scan(prefix, start, func(k string, v []byte) bool {
		got = append(got, k+"="+string(v))
		return limit == 0 || len(got) < limit
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
