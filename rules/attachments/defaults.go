package attachments

// The built-in lists. Each extension is one that Windows (or macOS, or a Java runtime) runs, installs,
// mounts or opens with code on a double click, and that legitimate mail rarely carries; they follow the
// lists that Microsoft Outlook blocks ("Blocked attachments in Outlook") and the banned_filename defaults of
// amavisd-new.

// executableExtensions run code when opened.
var executableExtensions = []string{
	// programs, libraries and installers
	"exe", "com", "scr", "pif", "cpl", "dll", "ocx", "sys", "drv", "msi", "msp", "mst", "msc", "msix",
	"msixbundle", "appx", "appxbundle", "application", "gadget", "xll", "jar", "app", "pkg", "dmg",
	// scripts run by the Windows Script Host, cmd.exe, PowerShell and mshta
	"bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc", "ws", "hta", "sct", "ps1", "ps1xml", "ps2",
	"ps2xml", "psc1", "psc2", "psm1", "psd1", "msh", "msh1", "msh2", "mshxml", "scf",
	// shortcuts and shell files that point at or carry code
	"lnk", "url", "inf", "reg", "shb", "shs", "settingcontent-ms", "library-ms", "search-ms", "diagcab",
	// disk images that Windows mounts with a double click, hiding their content from gateways
	"iso", "img", "vhd", "vhdx",
	// help files and Office add-ins and data links abused to run code
	"chm", "hlp", "iqy", "slk", "one", "ade", "adp", "mde", "mda", "accde", "ins", "isp", "job",
}

var defaultNames = func() []string {
	out := make([]string, len(executableExtensions))
	for i, e := range executableExtensions {
		out[i] = "*." + e
	}
	return out
}()

var executableExt = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range executableExtensions {
		m[e] = true
	}
	return m
}()

// defaultTypes are the declared or sniffed types of executable content, whatever the name says.
var defaultTypes = []string{
	"application/vnd.microsoft.portable-executable",
	"application/x-dosexec",
	"application/x-msdownload",
	"application/x-ms-dos-executable",
	"application/x-msdos-program",
	"application/x-executable",
	"application/x-elf",
	"application/x-mach-binary",
	"application/x-ms-shortcut",
	"application/x-ms-installer",
	"application/x-msi",
	"application/java-archive",
	"application/x-java-archive",
	"application/hta",
	"application/x-ms-application",
	"application/x-iso9660-image",
	"application/x-bat",
	"application/x-sh",
}

// decoyExt are the extensions a double extension puts before the real one to look harmless.
var decoyExt = map[string]bool{
	"pdf": true, "doc": true, "docx": true, "xls": true, "xlsx": true, "ppt": true, "pptx": true, "rtf": true,
	"txt": true, "csv": true, "odt": true, "ods": true, "jpg": true, "jpeg": true, "png": true, "gif": true,
	"bmp": true, "tif": true, "tiff": true, "mp3": true, "mp4": true, "wav": true, "avi": true, "mov": true,
	"htm": true, "html": true, "xml": true, "zip": true, "rar": true, "7z": true, "eml": true, "msg": true,
}

// extTypes says which sniffed types a document extension may have; content of another specific type under
// that name is a mismatch (an executable named invoice.pdf).
var extTypes = map[string][]string{
	"pdf":  {"application/pdf"},
	"jpg":  {"image/jpeg"},
	"jpeg": {"image/jpeg"},
	"png":  {"image/png"},
	"gif":  {"image/gif"},
	"bmp":  {"image/bmp"},
	"tif":  {"image/tiff"},
	"tiff": {"image/tiff"},
	"doc":  {"application/msword", "application/x-ole-storage", "text/rtf"},
	"xls":  {"application/vnd.ms-excel", "application/x-ole-storage"},
	"ppt":  {"application/vnd.ms-powerpoint", "application/x-ole-storage"},
	"docx": {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/zip"},
	"xlsx": {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/zip"},
	"pptx": {"application/vnd.openxmlformats-officedocument.presentationml.presentation", "application/zip"},
	"zip":  {"application/zip"},
	"rar":  {"application/vnd.rar", "application/x-rar-compressed"},
	"7z":   {"application/x-7z-compressed"},
	"gz":   {"application/gzip"},
	"txt":  {"text/plain"},
	"mp3":  {"audio/mpeg"},
	"mp4":  {"video/mp4"},
}

// genericType are sniffed types too vague to contradict a name.
var genericType = map[string]bool{
	"application/octet-stream": true,
	"application/x-empty":      true,
	"text/plain":               true,
	"text/html":                true,
	"text/xml":                 true,
	"application/xml":          true,
}
