"""The asyncio runtime of the concentrator: listener, per-connection drivers, control socket."""
