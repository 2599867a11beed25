package tunnel

import (
	"testing"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Every kind a manager reports reaches the client as itself, with the manager's message:
// the front ends map kinds to what their clients are told (a policy refusal to 403, 0x02).
func TestDialResultCarriesKinds(t *testing.T) {
	for _, k := range []remote.Kind{remote.Refused, remote.NoSuchHost, remote.Unreachable, remote.Timeout, remote.Failed, remote.Forbidden} {
		sent := remote.Errorf(k, "dial 169.254.169.254:80: %s", k)
		res := &tunnelpb.DialResult{Code: CodeOf(sent), Message: sent.Error()}
		got := ResultError(res)
		if remote.KindOf(got) != k || got.Error() != sent.Error() {
			t.Errorf("kind %s arrived as %s %q", k, remote.KindOf(got), got)
		}
	}
	if CodeOf(nil) != tunnelpb.Code_CODE_OK || ResultError(&tunnelpb.DialResult{}) != nil {
		t.Error("success does not travel as CODE_OK")
	}
}
