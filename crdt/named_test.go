package crdt

import (
	"testing"
)

// TestTooManyEarlyMarks: a member who writes to more messages before
// they exist than the marks kept in memory puts the realm into reading
// for every creating op, across a reopen; a message created afterwards
// still finds what was written to it first.
func TestTooManyEarlyMarks(t *testing.T) {
	a, m, c := writerAndWitness(t)
	wall := int64(t0 + 10)
	next, _ := a.r.Head(a.pub)
	for i := range uint64(maxEarly + 1) {
		op := m.write(&Set{Collection: MessagesCollection, ID: MessageID(a.pub, next+1+i),
			Fields: []Field{{"note", []byte("first")}}}, wall)
		if _, err := c.apply(op, wall); err != nil {
			t.Fatal(err)
		}
	}
	if !c.r.earlyAll || len(c.r.early) > maxEarly {
		t.Fatalf("after %d marks: earlyAll %v, %d in memory", maxEarly+1, c.r.earlyAll, len(c.r.early))
	}
	c.r = mustOpen(t, c.st, c.r.ID())
	if !c.r.earlyAll || len(c.r.early) != 0 {
		t.Fatalf("reopened: earlyAll %v, %d in memory", c.r.earlyAll, len(c.r.early))
	}
	op := a.write(&Set{Collection: MessagesCollection, Fields: []Field{{"text", []byte("hello")}}}, wall+1)
	if _, err := c.apply(op, wall+1); err != nil {
		t.Fatal(err)
	}
	got, err := c.r.Object(ObjectKey{MessagesCollection, MessageID(a.pub, next+1)})
	if err != nil {
		t.Fatal(err)
	}
	note, _ := got.Field("note")
	text, _ := got.Field("text")
	if string(note) != "first" || string(text) != "hello" || got.Created.Author != a.pub {
		t.Errorf("the message = note %q text %q by %s; want the early note, the text, and a as its creator",
			note, text, got.Created.Author.Short())
	}
}
