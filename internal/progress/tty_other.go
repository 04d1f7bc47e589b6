//go:build !linux

package progress

import "os"

// isTerminal approximates isatty(3) off Linux: a character device.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
