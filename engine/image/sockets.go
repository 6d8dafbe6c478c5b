package image

// UnixSocket is an AF_UNIX socket of the job. Sockets whose peer is in the
// job are restored as a connected pair; a listening socket is bound to its
// path again.
type UnixSocket struct {
	// Inode identifies the socket; PeerInode its connected peer (0 when
	// not connected).
	Inode     uint64 `json:"inode"`
	PeerInode uint64 `json:"peer_inode,omitempty"`
	// Type is SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
	Type int `json:"type"`
	// State is "listen", "connected" or "unconnected".
	State string `json:"state"`
	// Name is the bound address: a path, "@name" for an abstract one, ""
	// for none. PeerName is the peer's, as getpeername shows it.
	Name     string `json:"name,omitempty"`
	PeerName string `json:"peer_name,omitempty"`
	// Shutdown holds the SHUT_RD (1) and SHUT_WR (2) bits already applied.
	Shutdown int `json:"shutdown,omitempty"`
	// Backlog is a listening socket's backlog.
	Backlog int `json:"backlog,omitempty"`
	// Queue is what waits in the socket's receive queue: one entry per
	// message for datagram and seqpacket sockets, the byte stream (as one
	// or more entries) for stream sockets.
	Queue [][]byte `json:"queue,omitempty"`
}
