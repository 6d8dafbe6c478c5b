package node

// Error is a restore refused because this node or the rebuilt container
// differs from what the checkpoint needs.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }
