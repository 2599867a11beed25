package managerspec

import (
	"slices"
	"testing"
)

func TestParseManagedNamespaces(t *testing.T) {
	for in, want := range map[string][]string{
		"":           nil,
		" , ":        nil,
		"a":          {"a"},
		" a, b ,,c ": {"a", "b", "c"},
	} {
		if got := ParseManagedNamespaces(in); !slices.Equal(got, want) {
			t.Errorf("ParseManagedNamespaces(%q) = %q, want %q", in, got, want)
		}
	}
}
