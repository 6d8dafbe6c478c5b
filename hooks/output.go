package hooks

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/sirupsen/logrus"
)

// Bounds on what is kept of a hook's output.
const (
	// outputTail is how much of the end of the output Result.Output keeps.
	outputTail = 4 << 10
	// errTail is how much of the end of the output a hook's error quotes.
	errTail = 1 << 10
	// maxLine is the longest line logged as one; longer ones are split.
	maxLine = 4 << 10
)

// capture logs a hook's output line by line and keeps its end. It is
// written by one goroutine (readFrom); tail is read after that returned.
type capture struct {
	log    logrus.FieldLogger
	prefix string
	line   []byte // the unfinished line
	last   []byte // the end of the output, outputTail bytes or up to twice that
}

// newCapture returns a capture that logs each line at Info, after prefix.
func newCapture(log logrus.FieldLogger, prefix string) *capture {
	return &capture{log: log, prefix: prefix}
}

// readFrom reads r until EOF or an error and logs what it read.
func (c *capture) readFrom(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		c.write(buf[:n])
		if err != nil {
			break
		}
	}
	c.flush()
}

// write takes the next bytes of output.
func (c *capture) write(b []byte) {
	c.last = append(c.last, b...)
	if len(c.last) > 2*outputTail {
		n := copy(c.last, c.last[len(c.last)-outputTail:])
		c.last = c.last[:n]
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.line = append(c.line, b...)
			if len(c.line) >= maxLine {
				c.flush()
			}
			return
		}
		c.line = append(c.line, b[:i]...)
		b = b[i+1:]
		c.flush()
	}
}

// flush logs the unfinished line, if any.
func (c *capture) flush() {
	if len(c.line) > 0 {
		c.log.Info(c.prefix + string(c.line))
	}
	c.line = c.line[:0]
}

// tail returns the last outputTail bytes of the output.
func (c *capture) tail() string {
	if len(c.last) > outputTail {
		return string(c.last[len(c.last)-outputTail:])
	}
	return string(c.last)
}

// outputNote quotes the end of out for an error message: "" when there is
// no output, else "; output: ..." with the last errTail bytes, starting at
// a line when it had to cut.
func outputNote(out string) string {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return ""
	}
	if len(out) > errTail {
		out = out[len(out)-errTail:]
		if i := strings.IndexByte(out, '\n'); i >= 0 && i < len(out)-1 {
			out = out[i+1:]
		}
		out = "..." + out
	}
	return fmt.Sprintf("; output: %q", out)
}
