package main

// The attachment check: banned file types, double extensions, archives and macros, at end of message.
import (
	_ "github.com/moatmail/moat/rules/attachments"
)
