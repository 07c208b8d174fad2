//go:build moattest

package main

// The "test" check scripts verdicts for the end-to-end tests; it is compiled in only with -tags moattest.
import _ "github.com/moatmail/moat/test/scriptedcheck"
