"""EAP (RFC 3748) for PPP authentication: packet codec and method state machines, sans-I/O."""
