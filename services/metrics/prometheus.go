package metrics

import (
	"fmt"
	"strconv"
	"strings"
)

// Text writes Prometheus's text exposition format: each family's HELP and
// TYPE, then its values.
type Text struct{ b strings.Builder }

// Family starts a metric family; typ is gauge or counter.
func (t *Text) Family(name, typ, help string) {
	fmt.Fprintf(&t.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// Value adds a value with labels given as name, value pairs.
func (t *Text) Value(name string, v float64, labels ...string) {
	t.b.WriteString(name)
	if len(labels) > 0 {
		t.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				t.b.WriteByte(',')
			}
			t.b.WriteString(labels[i])
			t.b.WriteByte('=')
			t.b.WriteString(strconv.Quote(labels[i+1]))
		}
		t.b.WriteByte('}')
	}
	t.b.WriteByte(' ')
	t.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	t.b.WriteByte('\n')
}

// String is the text so far.
func (t *Text) String() string { return t.b.String() }

// Bool is 1 for true, 0 for false.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
