#!/usr/bin/python3
"""A job whose processes talk over TCP or UDP in its own network namespace.

netjob.py MODE DIR STEPS writes step numbers 1..STEPS to DIR/job.log, one per
line, and exits 0; any data it receives out of order, lost, doubled or from
the wrong address makes it exit 3 with the reason on stderr. Each mode keeps
data waiting in the kernel between steps, so that a checkpoint taken at any
moment finds some:

  pair4, pair6  a TCP connection over 127.0.0.1 or ::1 with 64 KiB unread in
                both directions, read and refilled 512 bytes a step
  pairtap       the same over 10.0.2.100, the address a user-mode network
                stack gives the job
  backlog       a client that waits in a listener's backlog until step
                STEPS*2/3, then an exchange over the accepted connection
  halfclose     a client that sent 12,000 bytes and shut its side down; the
                server reads 200 a step, then sees end of file, and writes
                to the client all along
  many          1,000 connections, ten of them exercised each step
  udp4, udp6    datagrams from a bound sender, read 20 behind
  asyncio       an asyncio server and client exchanging numbered lines
"""
import asyncio, os, resource, socket, sys, time

MODE, DIR, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
LOG = open(os.path.join(DIR, "job.log"), "a", buffering=1)
PAUSE = 0.03


def fail(msg):
    print("netjob %s: %s" % (MODE, msg), file=sys.stderr, flush=True)
    sys.exit(3)


def pattern(start, n, seed):
    return bytes((seed + (start + i) * 7) % 251 for i in range(n))


def read_exactly(sock, n):
    b = b""
    while len(b) < n:
        d = sock.recv(n - len(b))
        if not d:
            fail("end of file after %d of %d bytes" % (len(b), n))
        b += d
    return b


def tcp_pair(fam, host):
    l = socket.socket(fam)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, 0))
    l.listen(8)
    c = socket.socket(fam)
    c.connect(l.getsockname()[:2])
    s, _ = l.accept()
    return l, c, s


def pair(fam, host):
    _, c, s = tcp_pair(fam, host)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ahead, chunk = 64 << 10, 512
    # pos[x] is how far end x has written; got[x] how far it has read.
    pos, got = {c: 0, s: 0}, {c: 0, s: 0}
    for x in (c, s):
        x.sendall(pattern(0, ahead, 1 if x is c else 2))
        pos[x] = ahead
    for step in range(1, STEPS + 1):
        for x, peer in ((c, s), (s, c)):
            x.sendall(pattern(pos[x], chunk, 1 if x is c else 2))
            pos[x] += chunk
            b = read_exactly(peer, chunk)
            if b != pattern(got[peer], chunk, 1 if x is c else 2):
                fail("step %d: bytes %d.. of the stream differ" % (step, got[peer]))
            got[peer] += chunk
        LOG.write("%d\n" % step)
        time.sleep(PAUSE)


def backlog():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(4)
    c = socket.create_connection(l.getsockname())
    s = None
    for step in range(1, STEPS + 1):
        if step == STEPS * 2 // 3:
            l.settimeout(5)
            s, _ = l.accept()
            if s.getpeername() != c.getsockname():
                fail("accepted %s, the client is %s" % (s.getpeername(), c.getsockname()))
        if s is not None:
            c.sendall(b"%08d" % step)
            if read_exactly(s, 8) != b"%08d" % step:
                fail("step %d: wrong message" % step)
        LOG.write("%d\n" % step)
        time.sleep(PAUSE)


def halfclose():
    _, c, s = tcp_pair(socket.AF_INET, "127.0.0.1")
    total = 12000
    c.sendall(pattern(0, total, 5))
    c.shutdown(socket.SHUT_WR)
    got, eof = 0, False
    for step in range(1, STEPS + 1):
        if got < total:
            n = min(200, total - got)
            if read_exactly(s, n) != pattern(got, n, 5):
                fail("step %d: bytes %d.. differ" % (step, got))
            got += n
        elif not eof:
            if s.recv(1) != b"":
                fail("step %d: data after the client's shutdown" % step)
            eof = True
        s.sendall(b"%08d" % step)
        if read_exactly(c, 8) != b"%08d" % step:
            fail("step %d: wrong message to the half-closed client" % step)
        LOG.write("%d\n" % step)
        time.sleep(PAUSE)
    if not eof:
        fail("never saw the client's end of file")


def many():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(128)
    conns = []
    for i in range(1000):
        c = socket.create_connection(l.getsockname())
        s, _ = l.accept()
        conns.append((c, s))
    for step in range(1, STEPS + 1):
        for k in range(10):
            c, s = conns[(step * 10 + k) % len(conns)]
            msg = b"%08d%04d" % (step, k)
            c.sendall(msg)
            if read_exactly(s, len(msg)) != msg:
                fail("step %d: connection %d lost its message" % (step, k))
        LOG.write("%d\n" % step)
        time.sleep(PAUSE)


def udp(fam, host):
    r = socket.socket(fam, socket.SOCK_DGRAM)
    r.bind((host, 0))
    snd = socket.socket(fam, socket.SOCK_DGRAM)
    snd.bind((host, 0))
    lag, sent = 20, 0
    for _ in range(lag):
        sent += 1
        snd.sendto(b"%08d" % sent, r.getsockname())
    for step in range(1, STEPS + 1):
        sent += 1
        snd.sendto(b"%08d" % sent, r.getsockname())
        d, frm = r.recvfrom(100)
        if d != b"%08d" % step:
            fail("step %d: datagram %r" % (step, d))
        if frm[:2] != snd.getsockname()[:2]:
            fail("step %d: datagram from %s, the sender is %s" % (step, frm, snd.getsockname()))
        LOG.write("%d\n" % step)
        time.sleep(PAUSE)


async def async_main():
    async def serve(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                return
            writer.write(b"ok " + line)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for step in range(1, STEPS + 1):
        writer.write(b"%d\n" % step)
        await writer.drain()
        if await reader.readline() != b"ok %d\n" % step:
            fail("step %d: wrong answer" % step)
        LOG.write("%d\n" % step)
        await asyncio.sleep(PAUSE)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


modes = {
    "pair4": lambda: pair(socket.AF_INET, "127.0.0.1"),
    "pair6": lambda: pair(socket.AF_INET6, "::1"),
    "pairtap": lambda: pair(socket.AF_INET, "10.0.2.100"),
    "backlog": backlog,
    "halfclose": halfclose,
    "many": many,
    "udp4": lambda: udp(socket.AF_INET, "127.0.0.1"),
    "udp6": lambda: udp(socket.AF_INET6, "::1"),
    "asyncio": lambda: asyncio.run(async_main()),
}
modes[MODE]()
