"""Several servers: application servers, print providers, heartbeats (docs/deployment.md)."""
