"""MS-SSTP: packet codec and the server/client channel state machines."""
