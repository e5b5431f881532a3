package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Secrets are sealed at rest with AES-256-GCM under a key kept in a file beside the database
// (KeyFileName in the data directory): 32 random bytes, mode 0600, owned by the user gust runs
// as. A sealed value is an envelope: envelopePrefix, then base64 of a random 12-byte nonce and
// the ciphertext with its tag. The additional data names the record the value belongs to, so a
// ciphertext copied onto another secret does not open.

// KeyFileName is the secret key's file in the data directory.
const KeyFileName = "secret.key"

// KeySize is the size of a secret key: AES-256.
const KeySize = 32

const (
	envelopePrefix = "gust-aead-v1:"
	// envelopeFamily starts every version of the envelope: a value with it and another version
	// was sealed by a newer gust.
	envelopeFamily = "gust-aead-"
)

// ErrWrongSecretKey is returned when a sealed value does not open: the key is not the one it was
// sealed with, or the value was altered.
var ErrWrongSecretKey = errors.New("the secret key does not decrypt it (a different key, or altered data)")

// SecretKey is a key that seals secrets. Its bytes never print.
type SecretKey struct{ b [KeySize]byte }

// String hides the key from logs and error messages.
func (SecretKey) String() string { return "SecretKey(hidden)" }

// GoString hides the key from %#v.
func (k SecretKey) GoString() string { return k.String() }

// KeyPath is where the secret key of the data directory dataDir lives.
func KeyPath(dataDir string) string { return filepath.Join(dataDir, KeyFileName) }

// NewSecretKey makes a random key.
func NewSecretKey() (SecretKey, error) {
	var k SecretKey
	if _, err := io.ReadFull(rand.Reader, k.b[:]); err != nil {
		return k, fmt.Errorf("store: make a secret key: %w", err)
	}
	return k, nil
}

// ReadSecretKey reads a key file. It refuses a file that others may read, that belongs to
// another user, or that is not exactly KeySize bytes.
func ReadSecretKey(path string) (SecretKey, error) {
	var k SecretKey
	f, err := os.Open(path)
	if err != nil {
		return k, fmt.Errorf("store: read secret key: %w", err)
	}
	defer closeQuietly(f)
	fi, err := f.Stat()
	if err != nil {
		return k, fmt.Errorf("store: read secret key %s: %w", path, err)
	}
	if err := checkKeyFile(path, fi); err != nil {
		return k, err
	}
	if _, err := io.ReadFull(f, k.b[:]); err != nil {
		return k, fmt.Errorf("store: read secret key %s: %w", path, err)
	}
	return k, nil
}

// checkKeyFile checks what ReadSecretKey requires of a key file.
func checkKeyFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: secret key %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("store: secret key %s has mode %#o, so others may read it: it must be readable by its owner only; run `chmod 600 %s`", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("store: secret key %s belongs to uid %d, not to the user gust runs as (uid %d): `chown` it to that user", path, st.Uid, os.Geteuid())
	}
	if fi.Size() != KeySize {
		return fmt.Errorf("store: secret key %s holds %d bytes, not %d: it is not a gust secret key; restore the key this database was written with (another key cannot decrypt its secrets)", path, fi.Size(), KeySize)
	}
	return nil
}

// WriteSecretKey writes a key file atomically, mode 0600: it appears whole or not at all. With
// replace unset it fails (wrapping fs.ErrExist) if the file exists.
func WriteSecretKey(path string, k SecretKey, replace bool) (retErr error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*") // mode 0600
	if err != nil {
		return fmt.Errorf("store: write secret key: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) && retErr == nil {
			retErr = fmt.Errorf("store: write secret key: remove %s: %w", tmp, err)
		}
	}()
	_, err = f.Write(k.b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: write secret key %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path) // fails if path exists
	}
	if err != nil {
		return fmt.Errorf("store: write secret key %s: %w", path, err)
	}
	return syncDir(dir)
}

// LoadOrCreateSecretKey reads the key file at path, or makes a new key there if there is none.
func LoadOrCreateSecretKey(path string) (k SecretKey, created bool, err error) {
	k, err = ReadSecretKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if k, err = NewSecretKey(); err != nil {
		return k, false, err
	}
	if err = WriteSecretKey(path, k, false); errors.Is(err, fs.ErrExist) {
		k, err = ReadSecretKey(path) // made at the same moment by another process
		return k, false, err
	}
	return k, err == nil, err
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}

// closeQuietly closes a file only read from. Its error is dropped on purpose: nothing was
// written, and what was read has been checked already.
func closeQuietly(f *os.File) { _ = f.Close() }

// sealer seals and opens values with one key.
type sealer struct{ aead cipher.AEAD }

func newSealer(k SecretKey) (*sealer, error) {
	block, err := aes.NewCipher(k.b[:])
	if err != nil {
		return nil, fmt.Errorf("store: secret key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block) // nonce: 12 random bytes before the ciphertext
	if err != nil {
		return nil, fmt.Errorf("store: secret key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts plain for the record that ad names.
func (s *sealer) seal(plain []byte, ad string) string {
	return envelopePrefix + base64.StdEncoding.EncodeToString(s.aead.Seal(nil, nil, plain, []byte(ad)))
}

// open decrypts an envelope that seal made for the record that ad names. Its errors never
// quote the value.
func (s *sealer) open(envelope, ad string) ([]byte, error) {
	b64, ok := strings.CutPrefix(envelope, envelopePrefix)
	if !ok {
		if strings.HasPrefix(envelope, envelopeFamily) {
			return nil, errors.New("it was sealed by a newer gust (unknown envelope version): upgrade gust")
		}
		return nil, errors.New("it is not a sealed value")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: the envelope is not valid base64", ErrWrongSecretKey)
	}
	plain, err := s.aead.Open(nil, nil, raw, []byte(ad))
	if err != nil {
		return nil, ErrWrongSecretKey
	}
	return plain, nil
}

// isSealed tells an envelope (of any version) from a value an older gust stored in the clear.
func isSealed(v string) bool { return strings.HasPrefix(v, envelopeFamily) }
