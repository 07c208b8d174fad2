package attachments

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"os"
	"path"
	"strings"

	"github.com/bodgit/sevenzip"
	"github.com/gabriel-vasile/mimetype"
	"github.com/nwaples/rardecode/v2"
)

// Object is one thing that can be barred: a MIME leaf part, or a file inside an archive found in one.
type Object struct {
	Where     string     // "2" for part 2, "2:docs.zip/inner.zip/a.exe" for a file in archives in it
	Names     []FileName // every decoded form of its name (none for a part without one)
	Declared  string     // the declared Content-Type (parts only), lower case, without parameters
	Sniffed   string     // the type sniffed from the first bytes of the content
	Encrypted bool       // an encrypted archive, or a file encrypted inside one
	Macro     string     // what shows that this Office document has macros
	Limit     string     // which archive bound stopped the inspection of this object
	Unread    string     // why an archive could not be read (corrupt, unsupported)
}

// Facts is what the inspection of one message found.
type Facts struct {
	Objects []Object
	Parts   int
	Defects []string // broken MIME structure
	Limit   string   // a MIME walk limit that stopped the walk
}

// ArchiveLimits bound the inspection of archives; nothing is ever extracted to disk (only an archive itself
// may be spooled to a temporary file when it is larger than the memory share).
type ArchiveLimits struct {
	Depth        int   // nesting of archives opened (1: only archives attached directly)
	MaxEntries   int   // entries of one attachment, all nested archives together
	MaxTotal     int64 // uncompressed bytes of one attachment, all nested archives together
	MaxRatio     int64 // uncompressed size over compressed size of one entry
	MaxSize      int64 // an archive (or Office document) larger than this is not opened
	MemoryBuffer int64 // an archive up to this size is held in memory, a larger one in a temporary file
	TempDir      string
}

// max7zOpened bounds the files of one 7z archive whose content is sniffed.
const max7zOpened = 1000

// headSize is how much of each object's content is read to sniff its type.
const headSize = 4096

// inspector collects facts while the walker streams the message.
type inspector struct {
	ctx   context.Context
	lim   ArchiveLimits
	facts *Facts

	// per top-level attachment
	entries int
	total   int64
}

// Inspect walks the message from r and returns what it found. It returns an error only for a failed read of
// the message or a cancelled context; everything about the message itself is a fact.
func Inspect(ctx context.Context, r io.Reader, mimeLim Limits, arcLim ArchiveLimits) (*Facts, error) {
	in := &inspector{ctx: ctx, lim: arcLim, facts: &Facts{}}
	res, err := Walk(r, mimeLim, in.part)
	in.facts.Parts = res.Parts
	in.facts.Defects = res.Defects
	if errors.Is(err, ErrLimit) {
		in.facts.Limit = err.Error()
		err = nil
	}
	return in.facts, err
}

// part inspects one leaf part.
func (in *inspector) part(e *Entity, body io.Reader) error {
	if err := in.ctx.Err(); err != nil {
		return err
	}
	in.entries, in.total = 0, 0
	o := Object{Where: e.Label(), Declared: e.MediaType}
	for _, raw := range rawNames(e) {
		o.Names = append(o.Names, NormalizeName(raw))
	}
	dec := decoder(e.Encoding, body)
	head, err := readHead(dec)
	if err != nil {
		return err
	}
	o.Sniffed = sniff(head)
	kind := containerKind(o.Sniffed)
	if kind == "" {
		in.facts.Objects = append(in.facts.Objects, o)
		return nil
	}
	sp := &spill{memLimit: in.lim.MemoryBuffer, dir: in.lim.TempDir, max: in.lim.MaxSize}
	defer sp.Close()
	if _, err := sp.Write(head); err != nil {
		return err
	}
	if _, err := io.Copy(sp, dec); err != nil && !errors.Is(err, errTooLarge) {
		if errors.Is(err, errSpill) {
			return err
		}
		// A transfer encoding that breaks off: inspect what came through.
		in.facts.Defects = append(in.facts.Defects, fmt.Sprintf("%s: %v", o.Label(), err))
	}
	if sp.over {
		o.Limit = fmt.Sprintf("%s larger than %d bytes: not opened", kind, in.lim.MaxSize)
		in.facts.Objects = append(in.facts.Objects, o)
		return nil
	}
	in.container(&o, kind, sp, 1)
	return nil
}

// Label is the object's position for messages.
func (o *Object) Label() string { return "part " + o.Where }

// decoder undoes the transfer encoding; unknown encodings are read as they are.
func decoder(enc string, r io.Reader) io.Reader {
	switch enc {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Filter{r: r})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// base64Filter drops what is not in the base64 alphabet (line breaks, white space, junk) as decoders in mail
// clients do, and stops at the first '=' pad so that text after the encoded data is not read as data.
type base64Filter struct {
	r    io.Reader
	done bool
}

func (f *base64Filter) Read(p []byte) (int, error) {
	for {
		if f.done {
			return 0, io.EOF
		}
		n, err := f.r.Read(p)
		j := 0
		for i := 0; i < n; i++ {
			c := p[i]
			switch {
			case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/':
				p[j] = c
				j++
			case c == '=':
				p[j] = c
				j++
				// Keep a second '=' of the same pad, then stop.
				if i+1 < n && p[i+1] == '=' {
					p[j] = '='
					j++
				}
				f.done = true
				return j, nil
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

func readHead(r io.Reader) ([]byte, error) {
	head := make([]byte, headSize)
	n, err := io.ReadFull(r, head)
	if err == io.EOF || err == io.ErrUnexpectedEOF || err == nil {
		return head[:n], nil
	}
	var ce base64.CorruptInputError
	if errors.As(err, &ce) || strings.Contains(err.Error(), "quotedprintable") {
		return head[:n], nil // broken encoding: sniff what decoded
	}
	return head[:n], err
}

// sniff returns the type of content from its first bytes, without parameters.
func sniff(head []byte) string {
	if len(head) == 0 {
		return "application/x-empty"
	}
	t := mimetype.Detect(head).String()
	t, _, _ = strings.Cut(t, ";")
	return strings.TrimSpace(t)
}

// containerKind says how an object of a sniffed type is opened, "" when it is not a container.
func containerKind(sniffed string) string {
	switch sniffed {
	case "application/zip", "application/java-archive", "application/epub+zip",
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		"application/vnd.openxmlformats-officedocument.presentationml.presentation",
		"application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
		"application/vnd.oasis.opendocument.presentation":
		return "zip"
	case "application/x-tar":
		return "tar"
	case "application/gzip":
		return "gzip"
	case "application/x-bzip2":
		return "bzip2"
	case "application/vnd.rar", "application/x-rar-compressed":
		return "rar"
	case "application/x-7z-compressed":
		return "7z"
	case "application/x-ole-storage", "application/msword", "application/vnd.ms-excel",
		"application/vnd.ms-powerpoint", "application/x-ms-installer", "application/vnd.ms-outlook":
		return "ole"
	}
	return ""
}

// container opens o's content (an archive or an Office document) and adds what is inside as objects.
func (in *inspector) container(o *Object, kind string, sp *spill, depth int) {
	defer func() { in.facts.Objects = append(in.facts.Objects, *o) }()
	if depth > in.lim.Depth {
		o.Limit = fmt.Sprintf("archive nested deeper than %d", in.lim.Depth)
		return
	}
	var err error
	// A reader of a third-party format that panics on hostile input makes the archive unreadable, not the
	// message a tempfail.
	defer func() {
		if p := recover(); p != nil {
			o.Unread = fmt.Sprintf("%s: reader failed: %v", kind, p)
		}
	}()
	switch kind {
	case "zip":
		err = in.zip(o, sp, depth)
	case "tar":
		err = in.tar(o, sp.Reader(), depth)
	case "gzip", "bzip2":
		err = in.compressed(o, kind, sp, depth)
	case "rar":
		err = in.rar(o, sp.Reader(), depth)
	case "7z":
		err = in.sevenZip(o, sp, depth)
	case "ole":
		var macro string
		macro, err = oleMacros(sp.ReaderAt(), sp.size)
		o.Macro = macro
	}
	if err != nil && o.Limit == "" && !o.Encrypted {
		o.Unread = fmt.Sprintf("%s: %v", kind, err)
	}
}

var errBudget = errors.New("archive bound reached")

// entry counts one archive entry against the bounds; it returns errBudget once a bound is passed and records
// which in o.
func (in *inspector) entry(o *Object, declared int64) error {
	in.entries++
	if in.lim.MaxEntries > 0 && in.entries > in.lim.MaxEntries {
		o.Limit = fmt.Sprintf("more than %d archive entries", in.lim.MaxEntries)
		return errBudget
	}
	if declared > 0 {
		in.total += declared
	}
	if in.lim.MaxTotal > 0 && in.total > in.lim.MaxTotal {
		o.Limit = fmt.Sprintf("more than %d bytes uncompressed", in.lim.MaxTotal)
		return errBudget
	}
	return nil
}

// child makes the object of one archive entry.
func (in *inspector) child(o *Object, name string) Object {
	where := o.Where
	if strings.Contains(where, ":") {
		where += "/" + name
	} else {
		where += ":" + name
	}
	return Object{Where: where, Names: []FileName{NormalizeName(name)}}
}

// member sniffs an entry from r and opens it when it is itself a container. r yields at most the entry's
// bytes; read counts against the uncompressed budget.
func (in *inspector) member(c *Object, r io.Reader, depth int) error {
	if err := in.ctx.Err(); err != nil {
		return err
	}
	counted := &countingReader{r: r}
	head, err := readHead(counted)
	if err != nil {
		return in.memberErr(c, err)
	}
	c.Sniffed = sniff(head)
	kind := containerKind(c.Sniffed)
	if kind == "" {
		in.facts.Objects = append(in.facts.Objects, *c)
		return nil
	}
	if depth+1 > in.lim.Depth {
		c.Limit = fmt.Sprintf("archive nested deeper than %d", in.lim.Depth)
		in.facts.Objects = append(in.facts.Objects, *c)
		return nil
	}
	sp := &spill{memLimit: in.lim.MemoryBuffer, dir: in.lim.TempDir, max: in.lim.MaxSize}
	defer sp.Close()
	sp.Write(head)
	left := in.lim.MaxTotal - in.total
	if in.lim.MaxTotal <= 0 {
		left = 1 << 62
	}
	_, err = io.Copy(sp, io.LimitReader(counted, left+1))
	in.total += counted.n
	if in.lim.MaxTotal > 0 && in.total > in.lim.MaxTotal {
		c.Limit = fmt.Sprintf("more than %d bytes uncompressed", in.lim.MaxTotal)
		in.facts.Objects = append(in.facts.Objects, *c)
		return errBudget
	}
	if sp.over {
		c.Limit = fmt.Sprintf("%s larger than %d bytes: not opened", kind, in.lim.MaxSize)
		in.facts.Objects = append(in.facts.Objects, *c)
		return nil
	}
	if err != nil && !errors.Is(err, errTooLarge) {
		if errors.Is(err, errSpill) {
			return err
		}
		return in.memberErr(c, err)
	}
	in.container(c, kind, sp, depth+1)
	return nil
}

func (in *inspector) memberErr(c *Object, err error) error {
	if isPasswordErr(err) {
		c.Encrypted = true
	} else {
		c.Unread = err.Error()
	}
	in.facts.Objects = append(in.facts.Objects, *c)
	return nil
}

func isPasswordErr(err error) bool {
	if errors.Is(err, rardecode.ErrArchiveEncrypted) || errors.Is(err, rardecode.ErrArchivedFileEncrypted) ||
		errors.Is(err, rardecode.ErrBadPassword) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "password") || strings.Contains(s, "encrypt") || strings.Contains(s, "aes")
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (in *inspector) zip(o *Object, sp *spill, depth int) error {
	zr, err := zip.NewReader(sp.ReaderAt(), sp.size)
	if err != nil {
		return err
	}
	for _, f := range zr.File {
		if err := in.entry(o, int64(min(f.UncompressedSize64, 1<<62))); err != nil {
			return nil
		}
		if base := strings.ToLower(path.Base(f.Name)); base == "vbaproject.bin" || base == "vbaprojectsignature.bin" {
			o.Macro = f.Name
		}
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		c := in.child(o, f.Name)
		if f.Flags&1 != 0 {
			c.Encrypted, o.Encrypted = true, true
			in.facts.Objects = append(in.facts.Objects, c)
			continue
		}
		if in.lim.MaxRatio > 0 && f.UncompressedSize64 > 1<<20 &&
			f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(in.lim.MaxRatio) {
			c.Limit = fmt.Sprintf("compression ratio above %d", in.lim.MaxRatio)
			o.Limit = c.Limit
			in.facts.Objects = append(in.facts.Objects, c)
			continue
		}
		rc, err := f.Open()
		if err != nil {
			in.memberErr(&c, err)
			continue
		}
		err = in.member(&c, io.LimitReader(rc, int64(min(f.UncompressedSize64, 1<<62))+1), depth)
		rc.Close()
		if errors.Is(err, errBudget) {
			o.Limit = c.Limit
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (in *inspector) tar(o *Object, r io.Reader, depth int) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := in.entry(o, h.Size); err != nil {
			return nil
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			continue
		}
		c := in.child(o, h.Name)
		if err := in.member(&c, tr, depth); err != nil {
			if errors.Is(err, errBudget) {
				o.Limit = c.Limit
				return nil
			}
			return err
		}
	}
}

// compressed opens a gzip or bzip2 stream: one file, named by the gzip header or by the outer name without
// its extension.
func (in *inspector) compressed(o *Object, kind string, sp *spill, depth int) error {
	var r io.Reader
	name := ""
	if kind == "gzip" {
		zr, err := gzip.NewReader(sp.Reader())
		if err != nil {
			return err
		}
		zr.Multistream(false)
		name = zr.Name
		r = zr
	} else {
		r = bzip2.NewReader(sp.Reader())
	}
	if name == "" && len(o.Names) > 0 {
		n := o.Names[0].Norm
		for _, ext := range []string{".gz", ".tgz", ".bz2", ".tbz"} {
			if strings.HasSuffix(n, ext) {
				n = strings.TrimSuffix(n, ext)
				if ext == ".tgz" || ext == ".tbz" {
					n += ".tar"
				}
				break
			}
		}
		name = n
	}
	if name == "" {
		name = "(" + kind + " content)"
	}
	if err := in.entry(o, 0); err != nil {
		return nil
	}
	c := in.child(o, name)
	err := in.member(&c, r, depth)
	if errors.Is(err, errBudget) {
		o.Limit = c.Limit
		return nil
	}
	return err
}

func (in *inspector) rar(o *Object, r io.Reader, depth int) error {
	rr, err := rardecode.NewReader(r)
	if err != nil {
		if isPasswordErr(err) {
			o.Encrypted = true
			return nil
		}
		return err
	}
	for {
		h, err := rr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if isPasswordErr(err) {
				o.Encrypted = true
				return nil
			}
			return err
		}
		if err := in.entry(o, h.UnPackedSize); err != nil {
			return nil
		}
		if h.IsDir {
			continue
		}
		c := in.child(o, h.Name)
		if h.Encrypted || h.HeaderEncrypted {
			c.Encrypted, o.Encrypted = true, true
			in.facts.Objects = append(in.facts.Objects, c)
			continue
		}
		if err := in.member(&c, rr, depth); err != nil {
			if errors.Is(err, errBudget) {
				o.Limit = c.Limit
				return nil
			}
			return err
		}
	}
}

func (in *inspector) sevenZip(o *Object, sp *spill, depth int) error {
	zr, err := sevenzip.NewReader(sp.ReaderAt(), sp.size)
	if err != nil {
		if isPasswordErr(err) {
			o.Encrypted = true
			return nil
		}
		return err
	}
	// Declared sizes first: a 7z bomb is refused before anything is decompressed.
	var declared uint64
	for _, f := range zr.File {
		declared += f.UncompressedSize
	}
	if in.lim.MaxTotal > 0 && declared > uint64(in.lim.MaxTotal-in.total) {
		o.Limit = fmt.Sprintf("more than %d bytes uncompressed", in.lim.MaxTotal)
		return nil
	}
	for i, f := range zr.File {
		if err := in.entry(o, 0); err != nil {
			return nil
		}
		if f.FileInfo().IsDir() {
			continue
		}
		c := in.child(o, f.Name)
		if i >= max7zOpened {
			// Names only past this: reading a file of a solid block decompresses the block up to it.
			in.facts.Objects = append(in.facts.Objects, c)
			continue
		}
		rc, err := f.Open()
		if err != nil {
			in.memberErr(&c, err)
			if c.Encrypted {
				o.Encrypted = true
			}
			continue
		}
		err = in.member(&c, io.LimitReader(rc, int64(min(f.UncompressedSize, 1<<62))+1), depth)
		rc.Close()
		if c.Encrypted {
			o.Encrypted = true
		}
		if errors.Is(err, errBudget) {
			o.Limit = c.Limit
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var (
	errTooLarge = errors.New("larger than the size bound")
	errSpill    = errors.New("spool archive")
)

// spill holds an archive's bytes: in memory up to memLimit, then in a temporary file removed on Close. It
// stops taking bytes past max (over is then set).
type spill struct {
	memLimit int64
	max      int64
	dir      string
	mem      []byte
	f        *os.File
	size     int64
	over     bool
}

func (s *spill) Write(p []byte) (int, error) {
	if s.max > 0 && s.size+int64(len(p)) > s.max {
		s.over = true
		return 0, errTooLarge
	}
	if s.f == nil && s.size+int64(len(p)) <= s.memLimit {
		s.mem = append(s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "moat-attachment-*")
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errSpill, err)
		}
		s.f = f
		if _, err := f.Write(s.mem); err != nil {
			return 0, fmt.Errorf("%w: %w", errSpill, err)
		}
		s.mem = nil
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("%w: %w", errSpill, err)
	}
	return n, nil
}

// ReaderAt reads the bytes written so far.
func (s *spill) ReaderAt() io.ReaderAt {
	if s.f != nil {
		return s.f
	}
	return bytes.NewReader(s.mem)
}

// Reader reads the bytes written so far from the start.
func (s *spill) Reader() io.Reader { return io.NewSectionReader(s.ReaderAt(), 0, s.size) }

func (s *spill) Close() error {
	if s.f == nil {
		return nil
	}
	name := s.f.Name()
	s.f.Close()
	s.f = nil
	return os.Remove(name)
}
