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

// InetSocket is a TCP or UDP socket of the job's own network namespace.
// A connection between two of the job's sockets is restored on both ends
// with TCP_REPAIR: the same addresses, sequence numbers, queued data and
// negotiated options, with no packet exchanged.
type InetSocket struct {
	// Family is AF_INET or AF_INET6; Type SOCK_STREAM or SOCK_DGRAM.
	Family int `json:"family"`
	Type   int `json:"type"`
	// State is one of the Inet* states below.
	State string `json:"state"`
	// Local and Peer are the bound and connected addresses as "ip:port"
	// ("[ip]:port" for IPv6); empty when not bound or not connected.
	Local string `json:"local,omitempty"`
	Peer  string `json:"peer,omitempty"`
	// Backlog is a listening socket's backlog.
	Backlog int `json:"backlog,omitempty"`
	// Options are the socket options set on it, by name (see
	// engine/inetsock), read back as getsockopt gives them.
	Options map[string]int `json:"options,omitempty"`
	// TCP is the connection state of a connected TCP socket.
	TCP *TCPConn `json:"tcp,omitempty"`
	// Datagrams wait in a UDP socket's receive queue.
	Datagrams []Datagram `json:"datagrams,omitempty"`

	// Waiting is, at checkpoint time, how many connections wait in a
	// listener's backlog: each must be a client of the job's own.
	Waiting int `json:"-"`
}

// States of an InetSocket.
const (
	InetUnconnected = "unconnected" // TCP before listen or connect, UDP not connected
	InetListen      = "listen"
	InetEstablished = "established"
	// InetFinWait2 sent its FIN, which the peer acknowledged: shutdown
	// (SHUT_WR) on this end. InetCloseWait received the peer's FIN.
	InetFinWait2  = "fin-wait2"
	InetCloseWait = "close-wait"
	// InetPending is a client whose connection waits, not yet accepted,
	// in the backlog of a listener of the job.
	InetPending = "pending"
	// InetConnected is a UDP socket with a default peer.
	InetConnected = "connected"
)

// TCPConn is what TCP_REPAIR reads of a connection.
type TCPConn struct {
	// SendSeq is the sequence number after the last byte queued for
	// sending (write_seq), RecvSeq the next one expected (rcv_nxt). A
	// FIN sent or received is counted in them.
	SendSeq uint32 `json:"send_seq"`
	RecvSeq uint32 `json:"recv_seq"`
	// SendQueue is everything written and not yet acknowledged; its last
	// Unsent bytes were not sent yet. RecvQueue is what was received and
	// not yet read.
	SendQueue []byte `json:"send_queue,omitempty"`
	Unsent    int    `json:"unsent,omitempty"`
	RecvQueue []byte `json:"recv_queue,omitempty"`
	// MSS, the window scales and the options negotiated at connect time.
	MSS        int  `json:"mss"`
	SendWScale int  `json:"send_wscale,omitempty"`
	RecvWScale int  `json:"recv_wscale,omitempty"`
	WScale     bool `json:"wscale,omitempty"`
	SACK       bool `json:"sack,omitempty"`
	Timestamps bool `json:"timestamps,omitempty"`
	// TSVal is the connection's timestamp clock (TCP_TIMESTAMP).
	TSVal uint32 `json:"ts_val,omitempty"`
	// Window is struct tcp_repair_window: snd_wl1, snd_wnd, max_window,
	// rcv_wnd, rcv_wup.
	Window [5]uint32 `json:"window"`

	// Delivered is, at checkpoint time, how many bytes the peer
	// acknowledged over the connection's life: data a client sent to a
	// connection still waiting to be accepted, which the checkpoint
	// cannot read.
	Delivered uint64 `json:"-"`
}

// Datagram is one datagram waiting in a UDP socket's queue, with the
// address it came from.
type Datagram struct {
	From string `json:"from"`
	Data []byte `json:"data"`
}

// Pty is an end of a pseudo-terminal (the /dev/ptmx master or the
// /dev/pts/N slave) whose other end is in the job too, as launchers such
// as Open MPI's mpirun give their ranks one for their output. Its number
// is the kernel's choice at restore; the settings are the terminal's.
type Pty struct {
	// Index is the terminal's number at checkpoint time (N in
	// /dev/pts/N), which pairs the two ends.
	Index  int  `json:"index"`
	Master bool `json:"master,omitempty"`
	// Termios and Winsize are the terminal's settings; nil on every
	// descriptor but the first of the terminal.
	Termios *Termios  `json:"termios,omitempty"`
	Winsize [4]uint16 `json:"winsize"`
	// Queue is what was written to this end's terminal and not read
	// yet from this end: on the master, the slave's output; on the
	// slave, the master's input. Only for a raw terminal, where putting
	// it back changes nothing.
	Queue []byte `json:"queue,omitempty"`
}

// Termios is struct termios.
type Termios struct {
	Iflag  uint32   `json:"iflag"`
	Oflag  uint32   `json:"oflag"`
	Cflag  uint32   `json:"cflag"`
	Lflag  uint32   `json:"lflag"`
	Line   uint8    `json:"line"`
	Cc     [19]byte `json:"cc"`
	Ispeed uint32   `json:"ispeed"`
	Ospeed uint32   `json:"ospeed"`
}
