package executor

import "net/netip"

// internalPrefixes are the address ranges the http executors never dial
// unless the address is allowlisted literally: everything that is not a
// public unicast address on the internet (IANA special-purpose registries,
// RFC 6890 and its updates).
var internalPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network", 0.0.0.0
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // shared address space (CGNAT)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation (TEST-NET-1)
		"192.88.99.0/24",  // 6to4 relay anycast
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation (TEST-NET-2)
		"203.0.113.0/24",  // documentation (TEST-NET-3)
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
		"::/96",           // unspecified, loopback (::1) and IPv4-compatible (deprecated)
		"64:ff9b:1::/48",  // local-use NAT64 (RFC 8215)
		"100::/64",        // discard-only
		"2001::/32",       // Teredo (refused outright, below)
		"2001:2::/48",     // benchmarking
		"2001:db8::/32",   // documentation
		"2001:10::/28",    // ORCHID
		"2001:20::/28",    // ORCHIDv2
		"fc00::/7",        // unique local
		"fe80::/10",       // link-local
		"fec0::/10",       // site-local (deprecated)
		"ff00::/8",        // multicast
		"3fff::/20",       // documentation (RFC 9637)
		"5f00::/16",       // segment routing SIDs (RFC 9602)
		"::ffff:0:0:0/96", // IPv4-translated (SIIT, RFC 2765): refused whatever it carries
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64 prefix (RFC 6052): IPv4 in the last 32 bits
	sixTo4 = netip.MustParsePrefix("2002::/16")    // 6to4 (RFC 3056): IPv4 in bits 16-48
)

// internal reports whether the http executors treat ip as internal: an
// address in internalPrefixes, or an IPv6 address that carries an internal
// IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4
// 2002:aabb:ccdd::). The IPv4-compatible form ::a.b.c.d (deprecated), the
// IPv4-translated form ::ffff:0:a.b.c.d, the local-use NAT64 prefix and
// Teredo (2001::/32, whose client address is obfuscated and reached through
// a relay) are refused whatever they carry: nothing legitimate dials them.
func internal(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.WithZone("")
	if ip.Is4In6() {
		return internal(ip.Unmap())
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return internal(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(ip):
			if internal(netip.AddrFrom4([4]byte(b[2:6]))) {
				return true
			}
		}
	}
	for _, p := range internalPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
