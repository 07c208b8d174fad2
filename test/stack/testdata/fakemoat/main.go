// Command fakemoat stands in for moat in the harness's own tests: `fakemoat
// serve -c FILE` listens on every address listed in FILE (one "unix:/path" or
// "tcp:host:port" a line) and exits 0 on SIGTERM.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "serve" || os.Args[2] != "-c" {
		fmt.Fprintln(os.Stderr, "usage: fakemoat serve -c FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		network, addr, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		fmt.Println("listening on", line)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	fmt.Println("bye")
}
