package web

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// The password file has one administrator per line, "name:hash", with a bcrypt hash ($2a$, $2b$ or $2y$).
// Blank lines and lines starting with # are ignored. moat passwd writes it with mode 0600.

// BcryptCost is the cost of the hashes moat passwd writes.
const BcryptCost = 12

// ReadPasswords reads a password file into a map from user name to hash.
func ReadPasswords(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || ValidUser(name) != nil {
			return nil, fmt.Errorf("%s:%d: want \"name:bcrypt-hash\"", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: not a bcrypt hash: %v", path, n, name, err)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s is listed twice", path, n, name)
		}
		users[name] = []byte(hash)
	}
	return users, sc.Err()
}

// ValidUser checks an administrator's name: not empty, no colon, no white space or control characters.
func ValidUser(name string) error {
	if name == "" {
		return errors.New("empty user name")
	}
	if strings.ContainsAny(name, ":#") || strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("user name %q: no colon, #, white space or control characters", name)
	}
	return nil
}

// SetPassword writes user's entry into the file at path (created with mode 0600 when missing), replacing
// the old hash of that user and keeping every other line. The file is replaced atomically.
func SetPassword(path, user, password string) error {
	if err := ValidUser(user); err != nil {
		return err
	}
	if password == "" {
		return errors.New("empty password")
	}
	if len(password) > 72 {
		return errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), BcryptCost)
	if err != nil {
		return fmt.Errorf("hashing the password: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	entry := user + ":" + string(hash)
	var out []string
	replaced := false
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), ":"); name == user {
			if !replaced {
				out = append(out, entry)
			}
			replaced = true
			continue
		}
		if line != "" || len(out) > 0 {
			out = append(out, line)
		}
	}
	if !replaced {
		out = append(out, entry)
	}
	return writeAtomic(path, []byte(strings.Join(out, "\n")+"\n"))
}

// writeAtomic replaces the file at path with data, mode 0600, through a temporary file in the same folder.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
