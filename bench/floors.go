package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The machine's floors: what a durable write, a message between two
// processes and a signature check cost here before any sync layer adds
// its own work.

// fdatasync times writing 4 KiB to a file and syncing it, n times.
func fdatasync(dir string, n int) (lat []time.Duration, err error) {
	f, err := os.Create(filepath.Join(dir, "floor.bin"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for range n {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// loopbackRTT times n round trips of 64 bytes over a TCP connection on
// the loopback interface.
func loopbackRTT(n int) ([]time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 64)
	var lat []time.Duration
	for range n {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// verify returns the mean time of one ed25519 signature check.
func verify(n int) time.Duration {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 300)
	sig := ed25519.Sign(priv, msg)
	start := time.Now()
	for range n {
		if !ed25519.Verify(pub, msg, sig) {
			panic(fmt.Sprint("a good signature does not verify"))
		}
	}
	return time.Since(start) / time.Duration(n)
}
