"""The spool: the encrypted file format (`format`), key-encryption keys (`keys`), the store."""
