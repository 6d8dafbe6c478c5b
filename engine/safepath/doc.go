// Package safepath tells whether a path can be changed by a user other than
// the caller (or root): a file that decides what runs as the job's user
// (a hooks file) or where its memory is written (the checkpoint
// directory) must not be.
package safepath
