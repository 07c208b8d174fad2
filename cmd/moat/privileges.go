package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/moatmail/moat/milter"
)

// dropPrivileges makes the process run as [milter] user and group once its sockets are bound: the group is
// user's primary group unless group names another, and the supplementary groups are user's own. It returns
// what the process runs as, for the start-up line. Without a user, nothing changes.
func dropPrivileges(mc milter.Config) (string, error) {
	if mc.User == "" {
		if mc.Group != "" {
			return "", fmt.Errorf("[milter] group = %q needs user as well", mc.Group)
		}
		return "", nil
	}
	u, err := user.Lookup(mc.User)
	if err != nil {
		return "", fmt.Errorf("drop privileges: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return "", fmt.Errorf("drop privileges: uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return "", fmt.Errorf("drop privileges: gid of %s: %w", u.Username, err)
	}
	groupName := u.Gid
	if mc.Group != "" {
		g, err := user.LookupGroup(mc.Group)
		if err != nil {
			return "", fmt.Errorf("drop privileges: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return "", fmt.Errorf("drop privileges: gid of %s: %w", g.Name, err)
		}
		groupName = g.Name
	} else if g, err := user.LookupGroupId(u.Gid); err == nil {
		groupName = g.Name
	}
	if os.Geteuid() != 0 {
		if os.Geteuid() == uid {
			return u.Username + ":" + groupName, nil // started as that user already
		}
		return "", fmt.Errorf("drop privileges: [milter] user = %q needs moat started as root (running as uid %d)", mc.User, os.Geteuid())
	}
	groups := []int{gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if n, err := strconv.Atoi(id); err == nil && n != gid {
				groups = append(groups, n)
			}
		}
	}
	// Group first: once the uid is not root, the groups can no longer change. Go applies these to every
	// thread of the process.
	if err := syscall.Setgroups(groups); err != nil {
		return "", fmt.Errorf("drop privileges: setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return "", fmt.Errorf("drop privileges: setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return "", fmt.Errorf("drop privileges: setuid %d: %w", uid, err)
	}
	return u.Username + ":" + groupName, nil
}
