package managerspec

import (
	"strings"
	"testing"
)

func TestParseAllowedCIDRs(t *testing.T) {
	got, err := ParseAllowedCIDRs("10.250.0.1/32, 192.0.2.0/24", "10.250.0.0/16", "", "::ffff:10.1.0.0/112")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.0/16", "10.250.0.0/16", "192.0.2.0/24"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	for in, want := range map[string]string{
		"10.0.0.1":       "want a range",
		"nonsense/8":     "want a range",
		"169.254.0.0/16": "link-local",
		"169.254.1.0/24": "link-local",
		"127.0.0.0/8":    "loopback",
		"::1/128":        "loopback",
		"fe80::/64":      "link-local",
		"0.0.0.0/32":     "unspecified",
	} {
		if _, err := ParseAllowedCIDRs(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", in, err, want)
		}
	}
	// A wide range is the admin's choice; the never-dialed parts stay refused by Check.
	if _, err := ParseAllowedCIDRs("0.0.0.0/0", "169.254.0.0/15"); err != nil {
		t.Errorf("wide ranges: %v", err)
	}
}
