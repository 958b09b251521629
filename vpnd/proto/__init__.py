"""Sans-I/O protocol core: HTTP handshake, SSTP channel, PPP link and their crypto.

Objects here take bytes and the current time (float seconds, monotonic) and hand back bytes to
send, events, and the next timer deadline. Nothing in this package touches sockets, asyncio,
threads or the kernel; the runtime moves the bytes.
"""
