//go:build race

package main

// raceEnabled says the tests run with the race detector: the binary they
// build is built with it too, from the same compiled packages.
const raceEnabled = true
