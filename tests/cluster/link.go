package cluster

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ShapeLaptopLink makes the first laptop's link to the node slower than the machine: rateMbit
// in each direction, with a queue of its own for each TCP connection the laptop has open to
// the API server when it is called, served in turn (what fq_codel gives, the default queue
// discipline of Linux distributions; this kernel has neither fq_codel nor sfq, so each
// connection gets an HTB class). Connections made later share one more queue.
//
// On such a link a saturating download fills the link but not the machine's CPUs, and
// connections do not queue behind each other's bytes on the wire: what delays one flow
// behind another is then the tunnel's own multiplexing, which is what a test of
// head-of-line blocking must see. The returned func removes the shaping; so does the next
// cluster start.
func ShapeLaptopLink(rateMbit int) (ports []uint16, undo func(), err error) {
	return Laptops[0].ShapeLink(rateMbit)
}

// ShapeLink is ShapeLaptopLink for the laptop n.
func (n LaptopNet) ShapeLink(rateMbit int) (ports []uint16, undo func(), err error) {
	ports, err = n.apiPorts()
	if err != nil {
		return nil, nil, err
	}
	undo = n.unshape
	undo()
	// The host end's egress carries downloads (to the laptop's port); the laptop end's
	// carries uploads (from it).
	for _, side := range []struct {
		pre     []string
		dev     string
		portKey string
	}{{nil, n.host, "dport"}, {[]string{"nsenter", "--net=" + n.Netns}, n.peer, "sport"}} {
		tc := func(args ...string) error {
			cmd := append(append([]string{}, side.pre...), append([]string{"tc"}, args...)...)
			_, err := run(cmd[0], cmd[1:]...)
			return err
		}
		share := strconv.Itoa(max(1, rateMbit/(len(ports)+1))) + "mbit"
		ceil := strconv.Itoa(rateMbit) + "mbit"
		// One MTU a turn, so that a class with a packet waiting waits at most one packet of
		// each other class.
		steps := [][]string{
			{"qdisc", "add", "dev", side.dev, "root", "handle", "1:", "htb", "default", "9"},
			{"class", "add", "dev", side.dev, "parent", "1:", "classid", "1:1", "htb", "rate", ceil, "quantum", "1514"},
			{"class", "add", "dev", side.dev, "parent", "1:1", "classid", "1:9", "htb", "rate", share, "ceil", ceil, "quantum", "1514"},
		}
		for i, p := range ports {
			class := "1:" + strconv.FormatInt(int64(0x10+i), 16)
			steps = append(steps,
				[]string{"class", "add", "dev", side.dev, "parent", "1:1", "classid", class, "htb", "rate", share, "ceil", ceil, "quantum", "1514"},
				[]string{"filter", "add", "dev", side.dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
					"match", "ip", side.portKey, strconv.Itoa(int(p)), "0xffff", "flowid", class})
		}
		for _, s := range steps {
			if err := tc(s...); err != nil {
				undo()
				return nil, nil, fmt.Errorf("shaping the laptop link: %w", err)
			}
		}
	}
	return ports, undo, nil
}

// unshape removes what ShapeLink added (nothing there is fine).
func (n LaptopNet) unshape() {
	_, _ = run("tc", "qdisc", "del", "dev", n.host, "root")
	_, _ = run("nsenter", "--net="+n.Netns, "tc", "qdisc", "del", "dev", n.peer, "root")
}

// apiPorts lists the laptop's local ports of its established connections to the API server,
// read from the laptop namespace's /proc/net/tcp.
func (n LaptopNet) apiPorts() ([]uint16, error) {
	var data []byte
	err := inNetns(n.Netns, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("laptop connections: %w", err)
	}
	return establishedTo(data, netip.AddrPortFrom(netip.MustParseAddr(NodeIP), APIPort))
}

// establishedTo reads /proc/net/tcp lines and returns the local ports of the established
// connections to remote.
func establishedTo(table []byte, remote netip.AddrPort) ([]uint16, error) {
	var ports []uint16
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		local, err1 := procAddr(f[1])
		peer, err2 := procAddr(f[2])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("reading /proc/net/tcp line %q: %v %v", sc.Text(), err1, err2)
		}
		if peer == remote {
			ports = append(ports, local.Port())
		}
	}
	return ports, sc.Err()
}

// procAddr reads an IPv4 address as /proc/net/tcp writes it: the address's four bytes in
// host (little-endian) order, in hex, then the port in hex.
func procAddr(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(host)
	if !ok || err != nil || len(b) != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]}), uint16(p)), nil
}
