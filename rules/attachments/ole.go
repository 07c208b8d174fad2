package attachments

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// OLE compound files ([MS-CFB]) hold Word, Excel and PowerPoint 97-2003 documents. Their VBA macros live in
// a storage named "VBA" (under "Macros" in Word, "_VBA_PROJECT_CUR" in Excel) with a "_VBA_PROJECT" stream;
// only the directory is read to find them.

var cfbMagic = []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}

const (
	cfbEndOfChain = 0xFFFFFFFE
	cfbMaxSectors = 1 << 16 // bounds the FAT and directory walk of a hostile file
)

// oleMacros returns the name of the directory entry that shows VBA macros, or "" when there is none.
func oleMacros(r io.ReaderAt, size int64) (string, error) {
	hdr := make([]byte, 512)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("ole header: %w", err)
	}
	if !bytes.Equal(hdr[:8], cfbMagic) {
		return "", errors.New("not an OLE compound file")
	}
	shift := binary.LittleEndian.Uint16(hdr[0x1E:])
	if shift != 9 && shift != 12 {
		return "", fmt.Errorf("ole: sector shift %d", shift)
	}
	secSize := int64(1) << shift
	sector := func(n uint32) ([]byte, error) {
		off := (int64(n) + 1) * secSize
		if off+secSize > size+secSize { // the last sector may be short
			return nil, fmt.Errorf("ole: sector %d past the end", n)
		}
		b := make([]byte, secSize)
		k, err := r.ReadAt(b, off)
		if err != nil && !(errors.Is(err, io.EOF) && k > 0) {
			return nil, fmt.Errorf("ole: sector %d: %w", n, err)
		}
		return b, nil
	}
	// The FAT sectors: 109 in the header, the rest in the DIFAT chain.
	var fatSectors []uint32
	for i := 0; i < 109; i++ {
		if s := binary.LittleEndian.Uint32(hdr[0x4C+4*i:]); s < cfbEndOfChain-2 {
			fatSectors = append(fatSectors, s)
		}
	}
	difat := binary.LittleEndian.Uint32(hdr[0x44:])
	for steps := 0; difat < cfbEndOfChain-2 && steps < cfbMaxSectors; steps++ {
		b, err := sector(difat)
		if err != nil {
			return "", err
		}
		n := int(secSize/4) - 1
		for i := 0; i < n; i++ {
			if s := binary.LittleEndian.Uint32(b[4*i:]); s < cfbEndOfChain-2 {
				fatSectors = append(fatSectors, s)
			}
		}
		difat = binary.LittleEndian.Uint32(b[4*n:])
	}
	if len(fatSectors) > cfbMaxSectors {
		return "", errors.New("ole: FAT too large")
	}
	var fat []uint32
	for _, s := range fatSectors {
		b, err := sector(s)
		if err != nil {
			return "", err
		}
		for i := 0; i+4 <= len(b); i += 4 {
			fat = append(fat, binary.LittleEndian.Uint32(b[i:]))
		}
	}
	// The directory chain: 128-byte entries, name in UTF-16LE, type 1 storage, 2 stream, 5 root.
	dir := binary.LittleEndian.Uint32(hdr[0x30:])
	for steps := 0; dir < cfbEndOfChain-2 && steps < cfbMaxSectors; steps++ {
		b, err := sector(dir)
		if err != nil {
			return "", err
		}
		for off := 0; off+128 <= len(b); off += 128 {
			e := b[off : off+128]
			nameLen := int(binary.LittleEndian.Uint16(e[64:]))
			typ := e[66]
			if nameLen < 2 || nameLen > 64 || typ == 0 {
				continue
			}
			u := make([]uint16, nameLen/2-1)
			for i := range u {
				u[i] = binary.LittleEndian.Uint16(e[2*i:])
			}
			name := string(utf16.Decode(u))
			switch {
			case typ == 2 && strings.EqualFold(name, "_VBA_PROJECT"),
				typ == 1 && (strings.EqualFold(name, "VBA") || strings.EqualFold(name, "_VBA_PROJECT_CUR") || strings.EqualFold(name, "Macros")):
				return name, nil
			}
		}
		if int(dir) >= len(fat) {
			return "", fmt.Errorf("ole: directory sector %d outside the FAT", dir)
		}
		dir = fat[dir]
	}
	return "", nil
}
