"""Event-loop plumbing shared by the server and the client (below vpnd.server and vpnd.client)."""
