package canal

import (
	"strings"
	"unicode/utf8"
)

// Positions from the stream are checked where they enter. They are stored
// as the checkpoint, so a binlog file name a server sent with junk appended
// (one MySQL-protocol server did: four bytes after the name in its rotate
// event) would make every checkpoint write fail (PostgreSQL rejects invalid
// UTF-8), forever, or worse be stored and resumed from. A name is
// "<base>.<digits>" of printable text; a position is past the 4-byte magic
// header of the file.

// validBinlogName reports whether name looks like a binlog file name.
func validBinlogName(name string) bool {
	if name == "" || len(name) > 512 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || r == '\'' {
			return false
		}
	}
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return false
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// checkPosition fails on a file name or offset from the stream that cannot
// be a binlog position. A rotate event may carry offset 0 (go-mysql's fake
// rotate at the start of a stream); a commit position never does.
func (s *streamer) checkPosition(file string, pos uint32, rotate bool) error {
	if file != s.checkedFile { // names change only at rotates: check each once
		if !validBinlogName(file) {
			return fatalf("source %s sent binlog file name %q, which is not a binlog file name (<base>.<number>): not storing it as the checkpoint; the server or the connection is faulty (after the last committed position %s)",
				s.cfg.Addr, file, s.last)
		}
		s.checkedFile = file
	}
	if pos < 4 && !(rotate && pos == 0) {
		return fatalf("source %s sent binlog position %s:%d, inside the file header: not storing it as the checkpoint (after the last committed position %s)",
			s.cfg.Addr, file, pos, s.last)
	}
	return nil
}
