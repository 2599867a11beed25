package session

import (
	"net/netip"
	"slices"
	"testing"
)

func TestBeyondPolicyNamesWhatTheManagerWillRefuse(t *testing.T) {
	st := Status{ServiceCIDRs: []string{"10.96.0.0/16"}, PodCIDRs: []string{"10.244.0.0/16"}, AllowedCIDRs: []string{"10.250.0.1/32"}}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.96.3.0/24"),       // inside the service range
		netip.MustParsePrefix("10.250.0.1/32"),      // allowed by the admin
		netip.MustParsePrefix("10.250.0.0/24"),      // wider than what was allowed
		netip.MustParsePrefix("169.254.169.254/32"), // nowhere
		netip.MustParsePrefix("10.0.0.0/8"),         // covers the cluster's ranges but more too
	}
	got := st.BeyondPolicy(want)
	if !slices.Equal(got, []netip.Prefix{want[2], want[3], want[4]}) {
		t.Fatalf("BeyondPolicy = %v", got)
	}
}
