//go:build !linux

package netstack

func testLinks() map[string]linkFunc {
	return map[string]linkFunc{"channel": channelLink}
}
