package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// Files in the data dir.
const (
	keyFile   = "node.key" // the node's identity, libp2p's key encoding
	lockFile  = "lock"     // held while a node has the dir open
	storeDir  = "store"    // the datastore
	maxKeyLen = 4096       // bytes; an ed25519 key file is 68
)

// ErrLocked is returned by New when another node holds the data dir.
var ErrLocked = errors.New("data dir in use by another realmsync daemon")

// lockDir takes an exclusive lock on dir, held until the file is closed.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return f, nil
}

// loadKey reads the node key from dir, or makes one and writes it there
// (mode 0600) if there is none yet.
func loadKey(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, keyFile)
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return newKey(path)
	case err != nil:
		return nil, fmt.Errorf("read node key: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyLen+1))
	if err != nil {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	if len(raw) > maxKeyLen {
		return nil, fmt.Errorf("read node key %s: larger than %d bytes", path, maxKeyLen)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("read node key %s: %w", path, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("read node key %s: a %s key; realmsync needs ed25519", path, key.Type())
	}
	return key, nil
}

// newKey makes an ed25519 key and writes it to path, atomically.
func newKey(path string) (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make node key: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("make node key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return nil, fmt.Errorf("write node key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("write node key: %w", err)
	}
	return key, nil
}

// signingKey returns the node key as the engine signs with it.
func signingKey(key crypto.PrivKey) (ed25519.PrivateKey, error) {
	raw, err := key.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("node key: not an ed25519 private key (%d bytes, %v)", len(raw), err)
	}
	return ed25519.PrivateKey(raw), nil
}

// authorOf returns the engine's author key of a peer, which is its
// ed25519 public key; false for a peer id of another key type.
func authorOf(id peer.ID) (crdt.PublicKey, bool) {
	var k crdt.PublicKey
	pub, err := id.ExtractPublicKey()
	if err != nil || pub.Type() != crypto.Ed25519 {
		return k, false
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != len(k) {
		return k, false
	}
	copy(k[:], raw)
	return k, true
}

// peerOf returns the peer id of an author.
func peerOf(k crdt.PublicKey) (peer.ID, error) {
	pub, err := crypto.UnmarshalEd25519PublicKey(k[:])
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pub)
}
