"""Web plumbing the HTTP front ends share: the uvicorn guard, page rendering, web sessions and
CSRF tokens, the hold-reminder links. The application itself is built in spoolvault.app."""
