// Package sdnotify implements the service side of systemd's notification protocol (sd_notify(3)): one
// datagram of newline-separated KEY=VALUE assignments to the unix socket named by $NOTIFY_SOCKET. moat
// sends READY=1 once its sockets are bound, RELOADING=1 and READY=1 around a reload, and STOPPING=1 at
// shutdown, which is what a unit of Type=notify (or notify-reload) expects.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Notify sends state to the service manager. Without $NOTIFY_SOCKET (not started by systemd, or by a unit
// of another type) it does nothing and returns nil.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // an abstract socket
	} else if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET %q is neither a path nor an abstract socket", path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Ready is the state to send once the service serves.
const Ready = "READY=1"

// Stopping is the state to send when shutdown begins.
const Stopping = "STOPPING=1"

// Reloading is the state to send when a reload begins: systemd wants the monotonic time with it, so that
// it can tell this reload from an earlier one (Type=notify-reload).
func Reloading() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1_000_000 + ts.Nsec/1000
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
}
