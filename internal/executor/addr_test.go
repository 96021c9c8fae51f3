package executor

import (
	"errors"
	"net/netip"
	"testing"
)

// TestInternalAddresses: the dial check refuses every internal address,
// also one carried inside an IPv6 form (IPv4-compatible, IPv4-mapped,
// NAT64, 6to4, Teredo), and lets public addresses through. Only the check
// runs: nothing is dialed.
func TestInternalAddresses(t *testing.T) {
	internalAddrs := []string{
		"127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "10.1.2.3", "172.16.0.1", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "100.127.255.254", "192.0.0.8", "192.0.2.1", "198.18.0.1",
		"198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
		"255.255.255.255", "192.88.99.1",
		"::", "::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1", "100::1",
		"2001:db8::1", "3fff::1", "2001:2::1",
		// IPv4 inside IPv6
		"::127.0.0.1", "::8.8.8.8", // IPv4-compatible: refused whatever it carries
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:100.64.0.1",
		"::ffff:0:127.0.0.1", // IPv4-translated (SIIT)
		"64:ff9b::7f00:1", "64:ff9b::10.0.0.1", "64:ff9b::100.64.0.1", "64:ff9b::a9fe:a9fe",
		"64:ff9b:1::8.8.8.8",                                                   // local-use NAT64: refused whatever it carries
		"2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::1", "2002:6440:1::", // 6to4 of 127.0.0.1, 10.0.0.1, 169.254.169.254, 100.64.0.1
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo: refused outright
		"2001::1",
	}
	public := []string{
		"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "198.17.255.255", "198.20.0.0",
		"223.255.255.255", "192.0.1.1", "11.0.0.1",
		"2606:4700:4700::1111", "2a00:1450:4001::1",
		"::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
	}
	h := newHTTPClient(Config{MaxOutputBytes: 1024 + outputKeys})
	for _, s := range internalAddrs {
		ip := netip.MustParseAddr(s)
		if !internal(ip) {
			t.Errorf("%s is not internal", s)
		}
		if err := h.control("tcp", netip.AddrPortFrom(ip, 443).String(), nil); !errors.Is(err, ErrHostNotAllowed) {
			t.Errorf("dial %s = %v, want ErrHostNotAllowed", s, err)
		}
	}
	for _, s := range public {
		ip := netip.MustParseAddr(s)
		if internal(ip) {
			t.Errorf("public %s is internal", s)
		}
		if err := h.control("tcp", netip.AddrPortFrom(ip, 443).String(), nil); err != nil {
			t.Errorf("dial %s = %v, want allowed", s, err)
		}
	}
	// An internal address allowlisted literally (how the tests reach
	// loopback servers) is dialed; another port of it is not.
	lh := newHTTPClient(Config{Allowlist: []string{"127.0.0.1:8443"}, MaxOutputBytes: 1024 + outputKeys})
	if err := lh.control("tcp", "127.0.0.1:8443", nil); err != nil {
		t.Errorf("allowlisted 127.0.0.1:8443 = %v", err)
	}
	if err := lh.control("tcp", "127.0.0.1:8444", nil); !errors.Is(err, ErrHostNotAllowed) {
		t.Errorf("127.0.0.1:8444 = %v, want ErrHostNotAllowed", err)
	}
}

// FuzzInternalAddress: an IPv4 address is internal exactly when every
// IPv6 form that carries it (mapped, NAT64, 6to4) is; the check never
// panics on any 16 bytes.
func FuzzInternalAddress(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "8.8.8.8", "100.64.0.1", "::1", "2002:7f00:1::", "64:ff9b::7f00:1", "2001::1"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 16 {
			return
		}
		a16 := [16]byte(b)
		_ = internal(netip.AddrFrom16(a16))
		v4 := netip.AddrFrom4([4]byte(b[12:16]))
		in := internal(v4)
		mapped := netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[12], 13: b[13], 14: b[14], 15: b[15]})
		n64 := netip.AddrFrom16([16]byte{0: 0x00, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b[12], 13: b[13], 14: b[14], 15: b[15]})
		s6 := a16
		s6[0], s6[1] = 0x20, 0x02
		copy(s6[2:6], b[12:16])
		for _, a := range []netip.Addr{mapped, n64} {
			if internal(a) != in {
				t.Fatalf("%s: internal %v, but %s: %v", v4, in, a, internal(a))
			}
		}
		if in && !internal(netip.AddrFrom16(s6)) {
			t.Fatalf("%s is internal but its 6to4 form %s is not", v4, netip.AddrFrom16(s6))
		}
	})
}
