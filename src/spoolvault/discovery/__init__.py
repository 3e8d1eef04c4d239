"""Discovery: DNS-SD (Bonjour) advertisement of the hold queues (`dnssd`), see docs/discovery.md."""
