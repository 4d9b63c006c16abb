"""The clearing centre's pages for people: server-rendered HTML over the service's use cases,
signed in with an API key that becomes a session cookie (docs/web.md)."""
