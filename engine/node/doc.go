// Package node holds the error a restore returns when the node it runs on,
// not the image, is in the way: a file changed or missing, a mount gone, a
// quota too small. An older generation would meet the same difference, so
// the restart does not fall back to one; it tells the user what to change
// here instead.
package node
