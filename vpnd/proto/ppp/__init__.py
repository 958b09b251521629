"""Userspace PPP (RFC 1661 and friends) as used inside SSTP: no HDLC, frames start FF 03."""
