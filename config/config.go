// Package config loads moat's TOML configuration file and decodes its sections into Go structs, with errors
// that name the file, the line and the key, so an administrator can go straight to the mistake.
//
// # Decoding
//
// A [Section] decodes into a struct whose fields carry `toml:"name"` tags. Decoding is strict: a key the struct
// does not know is an error (a typo must not silently turn a check off). Supported field types are string,
// bool, the integer and float kinds, [Duration] (written "90s", "5m", "35d"), [Size] (written "500K", "25M"),
// any type implementing encoding.TextUnmarshaler (netip.Prefix, netip.Addr, …) written as a string, slices,
// maps with string keys and nested structs.
package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is a configuration error located in the file.
type Error struct {
	File string
	Line int    // 0 when the key is absent from the file
	Key  string // dotted path, e.g. "checks.relay.local_domains"
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Key != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	case e.Key != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
	default:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
}

// KeyError is an error about the value of one key, made by code that validates a decoded table without the
// file at hand (a service's constructor). [Section.Locate] turns it into an [*Error] with the file and line.
type KeyError struct {
	Key string // relative to the table, e.g. "timeout"
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }

func (e *KeyError) Unwrap() error { return e.Err }

// KeyErrorf returns a [*KeyError] for key.
func KeyErrorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

// File is a parsed configuration file.
type File struct {
	Path  string
	root  map[string]any
	lines map[string]int // dotted key path (array elements as [i]) -> line
}

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses data as the contents of the file named path.
func Parse(path string, data []byte) (*File, error) {
	f := &File{Path: path, root: map[string]any{}, lines: map[string]int{}}
	if err := toml.Unmarshal(data, &f.root); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, &Error{File: path, Line: line, Key: strings.Join(de.Key(), "."), Msg: de.Error()}
		}
		return nil, &Error{File: path, Msg: err.Error()}
	}
	f.indexLines(data)
	return f, nil
}

// indexLines records the line of every key, so that errors found after decoding can still point at the file.
func (f *File) indexLines(data []byte) {
	p := unstable.Parser{}
	p.Reset(data)
	var table []string
	arrayCount := map[string]int{}
	lineOf := func(n *unstable.Node) int {
		return bytes.Count(data[:n.Raw.Offset], []byte("\n")) + 1
	}
	keyOf := func(n *unstable.Node) ([]string, int) {
		var parts []string
		line := 0
		it := n.Key()
		for it.Next() {
			k := it.Node()
			parts = append(parts, string(k.Data))
			if line == 0 {
				line = lineOf(k)
			}
		}
		return parts, line
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table, _ = keyOf(e)
			_, line := keyOf(e)
			f.setLine(strings.Join(table, "."), line)
		case unstable.ArrayTable:
			parts, line := keyOf(e)
			base := strings.Join(parts, ".")
			idx := arrayCount[base]
			arrayCount[base] = idx + 1
			parts[len(parts)-1] = fmt.Sprintf("%s[%d]", parts[len(parts)-1], idx)
			table = parts
			f.setLine(strings.Join(table, "."), line)
		case unstable.KeyValue:
			parts, line := keyOf(e)
			full := append(append([]string{}, table...), parts...)
			f.setLine(strings.Join(full, "."), line)
		}
	}
}

func (f *File) setLine(key string, line int) {
	if _, ok := f.lines[key]; !ok {
		f.lines[key] = line
	}
}

// line finds the line of key, or of its closest parent present in the file.
func (f *File) line(key string) int {
	for key != "" {
		if l, ok := f.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// Section returns the table at the dotted path (e.g. "checks.relay"). A missing table is an empty, absent section.
func (f *File) Section(path string) *Section {
	s := &Section{file: f, path: path, m: map[string]any{}}
	cur := f.root
	for _, part := range strings.Split(path, ".") {
		next, ok := cur[part].(map[string]any)
		if !ok {
			return s
		}
		cur = next
	}
	s.m = cur
	s.present = true
	return s
}

// Abs resolves a path written in the file: a relative path is relative to the file's directory, so that
// moat finds its lists, keys and database whatever directory it is started from (systemd starts it in /).
func (f *File) Abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	dir := filepath.Dir(f.Path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Join(dir, p)
}

// TopKeys lists the top-level keys and tables of the file, sorted.
func (f *File) TopKeys() []string {
	keys := make([]string, 0, len(f.root))
	for k := range f.root {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LineOf returns the line where the dotted key (or its closest parent) is set, 0 if nowhere.
func (f *File) LineOf(key string) int { return f.line(key) }

// Keys lists the keys of the table at path, sorted.
func (f *File) Keys(path string) []string {
	return f.Section(path).Keys()
}

// Section is one TOML table of the file.
type Section struct {
	file    *File
	path    string
	m       map[string]any
	present bool
}

// Path is the dotted path of the section.
func (s *Section) Path() string { return s.path }

// File is the file the section comes from.
func (s *Section) File() *File { return s.file }

// Present reports whether the table exists in the file.
func (s *Section) Present() bool { return s.present }

// Keys lists the keys set in the section, sorted.
func (s *Section) Keys() []string {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Sub returns the sub-table name of this section.
func (s *Section) Sub(name string) *Section {
	sub := &Section{file: s.file, path: s.path + "." + name, m: map[string]any{}}
	if m, ok := s.m[name].(map[string]any); ok {
		sub.m, sub.present = m, true
	}
	return sub
}

// Without returns a copy of the section without the given keys; the engine uses it to hand a check only the keys
// that are the check's own.
func (s *Section) Without(keys ...string) *Section {
	m := make(map[string]any, len(s.m))
	for k, v := range s.m {
		m[k] = v
	}
	for _, k := range keys {
		delete(m, k)
	}
	return &Section{file: s.file, path: s.path, m: m, present: s.present}
}

// Pick returns a copy of the section with only the given keys.
func (s *Section) Pick(keys ...string) *Section {
	m := map[string]any{}
	for _, k := range keys {
		if v, ok := s.m[k]; ok {
			m[k] = v
		}
	}
	return &Section{file: s.file, path: s.path, m: m, present: s.present}
}

// Errorf returns an [*Error] located at key (relative to the section; "" for the section itself).
func (s *Section) Errorf(key, format string, args ...any) error {
	full := s.path
	if key != "" {
		if strings.HasPrefix(key, "[") {
			full += key
		} else {
			full += "." + key
		}
	}
	return &Error{File: s.file.Path, Line: s.file.line(full), Key: full, Msg: fmt.Sprintf(format, args...)}
}

// Locate places err in the section: an [*Error] stays as it is, a [*KeyError] is located at its key, any other
// error at the section itself. nil stays nil.
func (s *Section) Locate(err error) error {
	var ce *Error
	if err == nil || errors.As(err, &ce) {
		return err
	}
	var ke *KeyError
	if errors.As(err, &ke) {
		return s.Errorf(ke.Key, "%v", ke.Err)
	}
	return s.Errorf("", "%v", err)
}

// Decode fills the struct pointed to by v from the section. Fields not set in the file keep their values, so
// callers put defaults in v first.
func (s *Section) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: Decode needs a pointer to a struct, got %T", v)
	}
	return s.decodeStruct(s.path, s.m, rv.Elem())
}

// Duration is a time.Duration written as a string: "250ms", "90s", "5m", "12h", or with a day unit, "35d".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration parses Go durations plus a trailing "d" for days.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseFloat(n, 64)
		if err != nil || days < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(days * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. \"30s\", \"5m\", \"2d\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

var (
	durationType        = reflect.TypeOf(Duration(0))
	sizeType            = reflect.TypeOf(Size(0))
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

func (s *Section) errAt(key, format string, args ...any) error {
	return &Error{File: s.file.Path, Line: s.file.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

func fieldName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("toml")
	if tag == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, true
}

func (s *Section) decodeStruct(path string, m map[string]any, v reflect.Value) error {
	t := v.Type()
	known := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if name, ok := fieldName(t.Field(i)); ok {
			known[name] = i
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		idx, ok := known[k]
		if !ok {
			names := make([]string, 0, len(known))
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return s.errAt(path+"."+k, "unknown key (known keys: %s)", strings.Join(names, ", "))
		}
		if err := s.decodeValue(path+"."+k, m[k], v.Field(idx)); err != nil {
			return err
		}
	}
	return nil
}

// decodeValue decodes the TOML value raw at key into v.
func (s *Section) decodeValue(key string, raw any, v reflect.Value) error {
	if done, err := s.decodeWritten(key, raw, v); done {
		return err
	}
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return s.decodeScalar(key, raw, v)
	case reflect.Slice:
		arr, ok := raw.([]any)
		if !ok {
			return s.errAt(key, "want an array, got %s", describe(raw))
		}
		out := reflect.MakeSlice(v.Type(), len(arr), len(arr))
		for i, el := range arr {
			if err := s.decodeValue(fmt.Sprintf("%s[%d]", key, i), el, out.Index(i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case reflect.Map:
		return s.decodeMap(key, raw, v)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			return s.errAt(key, "want a table, got %s", describe(raw))
		}
		return s.decodeStruct(key, m, v)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return s.decodeValue(key, raw, v.Elem())
	}
	return s.errAt(key, "internal: unsupported field type %s", v.Type())
}

// decodeWritten decodes the types written in a form of their own: a Duration string, a Size (an integer
// here; a string goes to its UnmarshalText), an encoding.TextUnmarshaler string. done is false for other
// types.
func (s *Section) decodeWritten(key string, raw any, v reflect.Value) (done bool, err error) {
	if v.Type() == durationType {
		str, ok := raw.(string)
		if !ok {
			return true, s.errAt(key, "want a duration string such as \"30s\", got %s", describe(raw))
		}
		d, err := ParseDuration(str)
		if err != nil {
			return true, s.errAt(key, "%v", err)
		}
		v.SetInt(int64(d))
		return true, nil
	}
	if n, ok := raw.(int64); ok && v.Type() == sizeType {
		if n < 0 {
			return true, s.errAt(key, "size must not be negative")
		}
		v.SetInt(n)
		return true, nil
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshalerType) {
		str, ok := raw.(string)
		if !ok {
			return true, s.errAt(key, "want a string, got %s", describe(raw))
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(str)); err != nil {
			return true, s.errAt(key, "%v", err)
		}
		return true, nil
	}
	return false, nil
}

// decodeScalar decodes a string, a bool or a number, refusing values out of v's range.
func (s *Section) decodeScalar(key string, raw any, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		str, ok := raw.(string)
		if !ok {
			return s.errAt(key, "want a string, got %s", describe(raw))
		}
		v.SetString(str)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			return s.errAt(key, "want true or false, got %s", describe(raw))
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			return s.errAt(key, "want an integer, got %s", describe(raw))
		}
		if v.OverflowInt(n) {
			return s.errAt(key, "%d is out of range", n)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := raw.(int64)
		if !ok || n < 0 {
			return s.errAt(key, "want a non-negative integer, got %s", describe(raw))
		}
		if v.OverflowUint(uint64(n)) {
			return s.errAt(key, "%d is out of range", n)
		}
		v.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		switch n := raw.(type) {
		case float64:
			v.SetFloat(n)
		case int64:
			v.SetFloat(float64(n))
		default:
			return s.errAt(key, "want a number, got %s", describe(raw))
		}
	}
	return nil
}

// decodeMap decodes a table into a map with string keys.
func (s *Section) decodeMap(key string, raw any, v reflect.Value) error {
	if v.Type().Key().Kind() != reflect.String {
		return s.errAt(key, "internal: map key must be a string")
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return s.errAt(key, "want a table, got %s", describe(raw))
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for k, el := range m {
		ev := reflect.New(v.Type().Elem()).Elem()
		if err := s.decodeValue(key+"."+k, el, ev); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), ev)
	}
	return nil
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("number %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}
