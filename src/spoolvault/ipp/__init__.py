"""IPP front end: the RFC 8010 codec (`codec`), protocol numbers (`constants`)."""
