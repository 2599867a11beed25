package shell

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzWrite checks that PowerShell, cmd and JSON read back each value Write accepts
// exactly (the shells themselves run in the other tests, on fixed values).
func FuzzWrite(f *testing.F) {
	for _, v := range nasty {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		vars := []Var{{"A", value}, {"B", "x"}}
		var ps bytes.Buffer
		if err := Write(&ps, PowerShell, vars); err != nil {
			return // a NUL byte or not UTF-8, refused by every kind
		}
		got, err := parsePowerShell(ps.String())
		if err != nil || len(got) != 2 || got[0] != vars[0] || got[1] != vars[1] {
			t.Fatalf("PowerShell reads %q back as %q, %v", value, got, err)
		}
		var js bytes.Buffer
		if err := Write(&js, JSON, vars); err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		if err := json.Unmarshal(js.Bytes(), &m); err != nil || m["A"] != value {
			t.Fatalf("JSON reads %q back as %q, %v", value, m["A"], err)
		}
		var cmd bytes.Buffer
		if err := Write(&cmd, Cmd, vars); err != nil {
			if cmdValue(value) == nil {
				t.Fatalf("cmd refuses %q: %v", value, err)
			}
			return
		}
		got, err = parseCmd(cmd.String())
		if err != nil || len(got) != 2 || got[0] != vars[0] {
			t.Fatalf("cmd reads %q back as %q, %v", value, got, err)
		}
	})
}
