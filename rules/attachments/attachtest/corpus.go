// Package attachtest builds the test corpus of the attachments check from real structures: MIME messages
// with RFC 2231 and RFC 2047 names, RTLO names, nested zips, an encrypted zip, a zip bomb, a renamed
// executable, an OOXML document with a macro, OLE documents, a RAR archive, and Debian's clamav-testfiles
// samples. The unit tests, `moat scan` tests and Postfix tests all use it.
package attachtest

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
)

// Case is one message and the verdict the default configuration (plus macros = "quarantine") gives it.
type Case struct {
	Name    string
	Message []byte
	Action  string // "accept", "reject" or "quarantine"
	Code    int    // SMTP code of a rejection
	Reason  string // the reason word expected in some finding of the check ("" for a clean message)
}

// TestFiles is where Debian's clamav-testfiles package puts its samples.
const TestFiles = "/usr/share/clamav-testfiles"

// Sender and Rcpt are the envelope of every corpus message.
const (
	Sender = "alice@example.org"
	Rcpt   = "bob@example.net"
)

// Attachment is one MIME part of a corpus message.
type Attachment struct {
	Header string // header lines (CRLF-terminated) of the part, Content-Transfer-Encoding excluded
	Data   []byte
	QP     bool // quoted-printable instead of base64
}

// Message builds a multipart/mixed message with a text part and the attachments, base64-encoded.
func Message(subject string, atts ...Attachment) []byte {
	var b bytes.Buffer
	const bnd = "=_moat_corpus_boundary"
	fmt.Fprintf(&b, "From: Alice <%s>\r\nTo: Bob <%s>\r\nSubject: %s\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%s@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"+
		"This is a multi-part message in MIME format.\r\n\r\n--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Hello Bob,\r\n\r\nplease find the file attached.\r\n\r\nAlice\r\n",
		Sender, Rcpt, subject, strings.ReplaceAll(subject, " ", "-"), bnd, bnd)
	for _, a := range atts {
		fmt.Fprintf(&b, "--%s\r\n%s", bnd, a.Header)
		if a.QP {
			b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
			w := quotedprintable.NewWriter(&b)
			w.Write(a.Data)
			w.Close()
			b.WriteString("\r\n")
			continue
		}
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(a.Data)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	fmt.Fprintf(&b, "--%s--\r\n", bnd)
	return b.Bytes()
}

// Named is the header of an attachment called name (quoted as it is) of type ctype.
func Named(ctype, name string) string {
	return fmt.Sprintf("Content-Type: %s; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\n", ctype, name, name)
}

// PE is the start of a Windows executable: the DOS stub and a PE header.
func PE() []byte {
	b := make([]byte, 1024)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3C:], 0x80)
	copy(b[0x40:], "This program cannot be run in DOS mode.\r\r\n$")
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], 0x14c)
	return b
}

// PDF is a small valid PDF.
func PDF() []byte {
	return []byte("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n" +
		"trailer << /Root 1 0 R >>\n%%EOF\n")
}

// ZipFile is one file of a zip built by Zip.
type ZipFile struct {
	Name      string
	Data      []byte
	Encrypted bool // set the "encrypted" flag; the data is stored as it is (it is never decrypted)
	Store     bool
}

// Zip builds a zip archive.
func Zip(files ...ZipFile) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate}
		if f.Store || f.Encrypted {
			h.Method = zip.Store
		}
		if f.Encrypted {
			h.Flags |= 1
		}
		fw, err := w.CreateHeader(h)
		if err != nil {
			panic(err)
		}
		fw.Write(f.Data)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// Bomb is a zip with one entry of size bytes of zeros (about 1000 to 1 compressed).
func Bomb(size int) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	fw, _ := w.Create("zeros.bin")
	chunk := make([]byte, 1<<20)
	for n := 0; n < size; n += len(chunk) {
		fw.Write(chunk)
	}
	w.Close()
	return b.Bytes()
}

// DocxWithMacro is an OOXML (Word) document carrying a VBA project, as Word saves a .docm.
func DocxWithMacro() []byte {
	return Zip(
		ZipFile{Name: "[Content_Types].xml", Data: []byte(`<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/><Override PartName="/word/document.xml" ContentType="application/vnd.ms-word.document.macroEnabled.main+xml"/></Types>`)},
		ZipFile{Name: "_rels/.rels", Data: []byte(`<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>`)},
		ZipFile{Name: "word/document.xml", Data: []byte(`<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body/></w:document>`)},
		ZipFile{Name: "word/vbaProject.bin", Data: OLE("VBA", "_VBA_PROJECT")},
	)
}

// Docx is the same document without the VBA project.
func Docx() []byte {
	return Zip(
		ZipFile{Name: "[Content_Types].xml", Data: []byte(`<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`)},
		ZipFile{Name: "_rels/.rels", Data: []byte(`<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>`)},
		ZipFile{Name: "word/document.xml", Data: []byte(`<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body/></w:document>`)},
	)
}

// OLE builds a minimal OLE compound file ([MS-CFB], version 3, 512-byte sectors) whose directory holds a
// root entry, a "WordDocument" stream and the given entries: a name starting with an upper-case letter
// and without an underscore is a storage, others are streams.
func OLE(entries ...string) []byte {
	const sec = 512
	names := append([]string{"Root Entry", "WordDocument"}, entries...)
	dirSectors := (len(names)*128 + sec - 1) / sec
	// Sector 0: FAT; sectors 1..dirSectors: directory.
	out := make([]byte, sec*(1+1+dirSectors))
	h := out[:sec]
	copy(h, []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1})
	binary.LittleEndian.PutUint16(h[0x18:], 0x3E)
	binary.LittleEndian.PutUint16(h[0x1A:], 3)
	binary.LittleEndian.PutUint16(h[0x1C:], 0xFFFE)
	binary.LittleEndian.PutUint16(h[0x1E:], 9)
	binary.LittleEndian.PutUint16(h[0x20:], 6)
	binary.LittleEndian.PutUint32(h[0x2C:], 1) // one FAT sector
	binary.LittleEndian.PutUint32(h[0x30:], 1) // directory starts at sector 1
	binary.LittleEndian.PutUint32(h[0x38:], 4096)
	binary.LittleEndian.PutUint32(h[0x3C:], 0xFFFFFFFE)
	binary.LittleEndian.PutUint32(h[0x44:], 0xFFFFFFFE)
	for i := 0; i < 109; i++ {
		binary.LittleEndian.PutUint32(h[0x4C+4*i:], 0xFFFFFFFF)
	}
	binary.LittleEndian.PutUint32(h[0x4C:], 0) // the FAT is sector 0
	fat := out[sec : 2*sec]
	for i := 0; i < sec/4; i++ {
		binary.LittleEndian.PutUint32(fat[4*i:], 0xFFFFFFFF)
	}
	binary.LittleEndian.PutUint32(fat[0:], 0xFFFFFFFD) // FAT sector
	for i := 0; i < dirSectors; i++ {
		next := uint32(0xFFFFFFFE)
		if i < dirSectors-1 {
			next = uint32(i + 2)
		}
		binary.LittleEndian.PutUint32(fat[4*(i+1):], next)
	}
	dir := out[2*sec:]
	for i, n := range names {
		e := dir[i*128 : (i+1)*128]
		u := utf16.Encode([]rune(n))
		for j, c := range u {
			binary.LittleEndian.PutUint16(e[2*j:], c)
		}
		binary.LittleEndian.PutUint16(e[64:], uint16(2*len(u)+2))
		typ := byte(2)
		switch {
		case i == 0:
			typ = 5
		case i > 1 && !strings.Contains(n, "_") && n[0] >= 'A' && n[0] <= 'Z':
			typ = 1
		}
		e[66] = typ
		binary.LittleEndian.PutUint32(e[68:], 0xFFFFFFFF)
		binary.LittleEndian.PutUint32(e[72:], 0xFFFFFFFF)
		binary.LittleEndian.PutUint32(e[76:], 0xFFFFFFFF)
		binary.LittleEndian.PutUint32(e[116:], 0xFFFFFFFE)
	}
	// The header's sector numbers count from the sector after the header: FAT is 0, directory 1…
	return out
}

// RAR builds a RAR 4 archive with files stored uncompressed; an encrypted file only carries the flag.
func RAR(files ...ZipFile) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x52, 0x61, 0x72, 0x21, 0x1A, 0x07, 0x00})
	block := func(typ byte, flags uint16, body []byte) {
		head := make([]byte, 7, 7+len(body))
		head[2] = typ
		binary.LittleEndian.PutUint16(head[3:], flags)
		binary.LittleEndian.PutUint16(head[5:], uint16(7+len(body)))
		head = append(head, body...)
		binary.LittleEndian.PutUint16(head[0:], uint16(crc32.ChecksumIEEE(head[2:])))
		b.Write(head)
	}
	block(0x73, 0, make([]byte, 6)) // archive header
	for _, f := range files {
		var fh bytes.Buffer
		binary.Write(&fh, binary.LittleEndian, uint32(len(f.Data)))        // PACK_SIZE
		binary.Write(&fh, binary.LittleEndian, uint32(len(f.Data)))        // UNP_SIZE
		fh.WriteByte(2)                                                    // HOST_OS: Windows
		binary.Write(&fh, binary.LittleEndian, crc32.ChecksumIEEE(f.Data)) // FILE_CRC
		binary.Write(&fh, binary.LittleEndian, uint32(0x5B7A0000))         // FTIME
		fh.WriteByte(29)                                                   // UNP_VER
		fh.WriteByte(0x30)                                                 // METHOD: store
		binary.Write(&fh, binary.LittleEndian, uint16(len(f.Name)))        // NAME_SIZE
		binary.Write(&fh, binary.LittleEndian, uint32(0x20))               // ATTR
		fh.WriteString(f.Name)
		flags := uint16(0x8000)
		if f.Encrypted {
			flags |= 0x04
		}
		block(0x74, flags, fh.Bytes())
		b.Write(f.Data)
	}
	block(0x7B, 0x4000, nil) // end of archive
	return b.Bytes()
}

// Corpus returns the cases. Those from clamav-testfiles are included when dir holds them; missing reports
// the files that were not found.
func Corpus(dir string) (cases []Case, missing []string) {
	pe := PE()
	add := func(c Case) { cases = append(cases, c) }
	add(Case{Name: "plain text", Action: "accept",
		Message: []byte("From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: plain\r\nMessage-ID: <plain@example.org>\r\n\r\nJust text.\r\n")})
	add(Case{Name: "pdf attachment", Action: "accept", Message: Message("pdf", Attachment{Header: Named("application/pdf", "report.pdf"), Data: PDF()})})
	add(Case{Name: "docx without macro", Action: "accept", Message: Message("docx", Attachment{
		Header: Named("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "minutes.docx"), Data: Docx()})})
	add(Case{Name: "exe by name", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("exe", Attachment{Header: Named("application/octet-stream", "setup.exe"), Data: pe})})
	add(Case{Name: "trailing dots and spaces", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("dots", Attachment{Header: Named("application/octet-stream", "tool.bat. . ."), Data: []byte("@echo off\r\n")})})
	add(Case{Name: "double extension", Action: "reject", Code: 554, Reason: "double-extension",
		Message: Message("double", Attachment{Header: Named("application/octet-stream", "scan.pdf      .vbs"), Data: []byte("MsgBox 1\r\n")})})
	add(Case{Name: "rfc2231 continuations and charset", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("rfc2231", Attachment{Header: "Content-Type: application/octet-stream\r\n" +
			"Content-Disposition: attachment;\r\n filename*0*=utf-8''%E2%82%AC%20Rechnung;\r\n filename*1=\"_2026.\";\r\n filename*2*=%6As\r\n",
			Data: []byte("WScript.Echo(1)\r\n")})})
	add(Case{Name: "rfc2231 in iso-8859-1", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("rfc2231 latin1", Attachment{Header: "Content-Type: application/octet-stream; name*=iso-8859-1'de'%FCbersicht.hta\r\n",
			Data: []byte("<html><script>1</script></html>")})})
	add(Case{Name: "rfc2047 encoded word", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("rfc2047", Attachment{Header: "Content-Type: application/octet-stream; name=\"=?UTF-8?B?" +
			base64.StdEncoding.EncodeToString([]byte("Zahlung_Ü.scr")) + "?=\"\r\nContent-Disposition: attachment\r\n", Data: pe})})
	add(Case{Name: "percent escapes", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("percent", Attachment{Header: Named("application/octet-stream", "update.ex%65"), Data: []byte("x")})})
	add(Case{Name: "rtlo name hiding exe", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("rtlo exe", Attachment{Header: "Content-Type: application/octet-stream\r\n" +
			"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n", Data: pe})})
	add(Case{Name: "rtlo name", Action: "reject", Code: 554, Reason: "bidi-name",
		Message: Message("rtlo", Attachment{Header: "Content-Type: text/plain\r\n" +
			"Content-Disposition: attachment; filename*=utf-8''notes%E2%80%AEtxt.cod\r\n", Data: []byte("text")})})
	add(Case{Name: "fullwidth and zero-width", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("fullwidth", Attachment{Header: "Content-Type: application/octet-stream\r\n" +
			"Content-Disposition: attachment; filename*=utf-8''photo%E2%80%8B.%EF%BD%8A%EF%BD%93\r\n", Data: []byte("x")})})
	add(Case{Name: "renamed executable", Action: "reject", Code: 554, Reason: "banned-type",
		Message: Message("renamed", Attachment{Header: Named("application/pdf", "invoice.pdf"), Data: pe})})
	add(Case{Name: "nested zips", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("nested", Attachment{Header: Named("application/zip", "docs.zip"), Data: Zip(
			ZipFile{Name: "readme.txt", Data: []byte("read me")},
			ZipFile{Name: "inner.zip", Data: Zip(ZipFile{Name: "deeper/payload.exe", Data: pe})})})})
	add(Case{Name: "zip nested past archive_depth", Action: "reject", Code: 554, Reason: "archive-limit",
		Message: Message("deep", Attachment{Header: Named("application/zip", "a.zip"), Data: Zip(ZipFile{Name: "b.zip",
			Data: Zip(ZipFile{Name: "c.zip", Data: Zip(ZipFile{Name: "d.zip", Data: Zip(ZipFile{Name: "e.txt", Data: []byte("e")})})})})})})
	add(Case{Name: "encrypted zip", Action: "accept", Reason: "encrypted-archive",
		Message: Message("encrypted", Attachment{Header: Named("application/zip", "secret.zip"), Data: Zip(
			ZipFile{Name: "contract.doc", Data: []byte("\x8f\x12\xee\x01garbage that stands for ciphertext"), Encrypted: true})})})
	add(Case{Name: "zip bomb", Action: "reject", Code: 554, Reason: "archive-limit",
		Message: Message("bomb", Attachment{Header: Named("application/zip", "bomb.zip"), Data: Bomb(64 << 20)})})
	add(Case{Name: "ooxml with macro", Action: "quarantine", Reason: "macro",
		Message: Message("macro", Attachment{Header: Named("application/vnd.ms-word.document.macroEnabled.12", "report.docm"), Data: DocxWithMacro()})})
	add(Case{Name: "ole with macro", Action: "quarantine", Reason: "macro",
		Message: Message("ole macro", Attachment{Header: Named("application/msword", "budget.doc"), Data: OLE("Macros", "VBA", "_VBA_PROJECT", "PROJECT")})})
	add(Case{Name: "ole without macro", Action: "accept",
		Message: Message("ole plain", Attachment{Header: Named("application/msword", "letter.doc"), Data: OLE("1Table", "SummaryInformation")})})
	add(Case{Name: "rar with executable", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("rar", Attachment{Header: Named("application/vnd.rar", "files.rar"), Data: RAR(
			ZipFile{Name: "notes.txt", Data: []byte("notes")}, ZipFile{Name: "run.cmd", Data: []byte("echo 1")})})})
	add(Case{Name: "encrypted rar", Action: "accept", Reason: "encrypted-archive",
		Message: Message("rar encrypted", Attachment{Header: Named("application/vnd.rar", "locked.rar"), Data: RAR(
			ZipFile{Name: "contract.txt", Data: []byte("ciphertext"), Encrypted: true})})})
	add(Case{Name: "quoted-printable script", Action: "reject", Code: 554, Reason: "banned-name",
		Message: Message("qp", Attachment{Header: Named("text/plain", "setup.ps1"), Data: []byte("Write-Host 1\r\n"), QP: true})})
	add(Case{Name: "broken MIME structure", Action: "accept", Reason: "malformed-mime",
		Message: []byte("From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: broken\r\nMessage-ID: <broken@example.org>\r\n" +
			"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: multipart/alternative\r\n\r\n" +
			"no boundary here\r\n--outer\r\nContent-Type: text/plain\r\n\r\nunterminated\r\n")})

	for _, s := range []struct {
		file, ctype, action, reason string
	}{
		{"clam.zip", "application/zip", "reject", "banned-name"},
		{"clam.7z", "application/x-7z-compressed", "reject", "banned-name"},
		{"clam.tar.gz", "application/gzip", "reject", "banned-name"},
		{"clam.exe.bz2", "application/x-bzip2", "reject", "banned-name"},
		{"clam.exe", "application/octet-stream", "reject", "banned-name"},
		{"clam.ole.doc", "application/msword", "accept", ""},
		{"clam.pdf", "application/pdf", "accept", ""},
	} {
		data, err := os.ReadFile(filepath.Join(dir, s.file))
		if err != nil {
			missing = append(missing, s.file)
			continue
		}
		c := Case{Name: "clamav-testfiles " + s.file, Action: s.action, Reason: s.reason,
			Message: Message(s.file, Attachment{Header: Named(s.ctype, s.file), Data: data})}
		if s.action == "reject" {
			c.Code = 554
		}
		add(c)
	}
	return cases, missing
}

// Config is the [checks.attachments] table the corpus verdicts are for.
const Config = `[checks.attachments]
macros = "quarantine"
`

// Mixed is the benchmark corpus: mail as a gateway sees it, mostly plain text and HTML, some ordinary
// attachments (PDF, DOCX, zip of documents, images), and the corpus's hostile cases, n messages in all.
func Mixed(n int) [][]byte {
	rng := uint32(7)
	next := func() uint32 { rng = rng*1664525 + 1013904223; return rng }
	random := func(size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(next() >> 24)
		}
		return b
	}
	text := strings.Repeat("Minutes of the weekly meeting: budget, schedule, review of the release plan.\r\n", 60)
	hostile, _ := Corpus("")
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		switch i % 10 {
		case 0, 1, 2, 3:
			out = append(out, []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: text %d\r\nMessage-ID: <t%d@example.org>\r\n\r\n%s", Sender, Rcpt, i, i, text)))
		case 4:
			out = append(out, Message(fmt.Sprintf("pdf %d", i), Attachment{Header: Named("application/pdf", "report.pdf"), Data: append(PDF(), random(60<<10)...)}))
		case 5:
			out = append(out, Message(fmt.Sprintf("docx %d", i), Attachment{Header: Named("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "minutes.docx"), Data: Docx()}))
		case 6:
			out = append(out, Message(fmt.Sprintf("zip %d", i), Attachment{Header: Named("application/zip", "documents.zip"),
				Data: Zip(ZipFile{Name: "a.pdf", Data: PDF()}, ZipFile{Name: "b.txt", Data: []byte(text)}, ZipFile{Name: "photo.jpg", Data: random(30 << 10), Store: true})}))
		case 7:
			out = append(out, Message(fmt.Sprintf("image %d", i), Attachment{Header: Named("image/jpeg", "photo.jpg"), Data: append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, random(120<<10)...)}))
		default:
			out = append(out, hostile[(i/10)%len(hostile)].Message)
		}
	}
	return out
}

// Big is a message of about size bytes in parts attachments (base64 data of random bytes, every 50th a zip),
// for measuring the memory of a walk.
func Big(size, parts int) []byte {
	per := size / parts * 3 / 4 // base64 grows data by 4/3
	var atts []Attachment
	rng := uint32(11)
	for i := 0; i < parts; i++ {
		data := make([]byte, per)
		for j := range data {
			rng = rng*1664525 + 1013904223
			data[j] = byte(rng >> 24)
		}
		if i%50 == 49 {
			atts = append(atts, Attachment{Header: Named("application/zip", fmt.Sprintf("archive-%d.zip", i)), Data: Zip(ZipFile{Name: "data.bin", Data: data, Store: true})})
			continue
		}
		atts = append(atts, Attachment{Header: Named("application/octet-stream", fmt.Sprintf("data-%d.bin", i)), Data: data})
	}
	return Message("big", atts...)
}
