package registry

import "golang.org/x/sys/unix"

// setUnsentMax sets TCP_NOTSENT_LOWAT: the socket takes no more bytes, and
// polls as not writable, while n of them wait to be sent; 0 is the
// system's default (net.ipv4.tcp_notsent_lowat: no bound unless set).
func setUnsentMax(fd, n int) error {
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
}
